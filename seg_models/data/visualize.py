"""Colour views of class-id images, for people looking at outputs (not for consumers)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from seg_models.data.labels import LabelSet
from seg_models.panoptic.fusion import PanopticResult
from seg_models.segmenters.instance_postprocess import Instance


def colorize(class_ids: np.ndarray, label_set: LabelSet) -> np.ndarray:
    """RGB image (H, W, 3) with each pixel in its class's colour; the ignore id is black."""
    return label_set.palette()[class_ids]


def overlay(rgb: np.ndarray, class_ids: np.ndarray, label_set: LabelSet, alpha: float = 0.5) -> np.ndarray:
    """The camera image blended with the class colours (``alpha`` = weight of the colours)."""
    colors = colorize(class_ids, label_set).astype(np.float32)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colors
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def draw_instances(rgb: np.ndarray, instances: Sequence[Instance], label_set: LabelSet,
                   alpha: float = 0.5) -> np.ndarray:
    """The camera image with each instance's mask tinted in its class colour, its box outlined and
    "class score" written above it; lowest score drawn first, so the best detection is on top."""
    canvas = rgb.copy()
    palette = label_set.palette()
    for instance in sorted(instances, key=lambda item: item.score):
        color = palette[instance.class_id]
        x, y, width, height = instance.roi
        region = canvas[y:y + height, x:x + width]
        region[instance.mask] = ((1.0 - alpha) * region[instance.mask] + alpha * color + 0.5).astype(np.uint8)
        cv2.rectangle(canvas, (x, y), (x + width - 1, y + height - 1), tuple(int(c) for c in color), 2)
        cv2.putText(canvas, f'{instance.class_name} {instance.score:.2f}', (x, max(y - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, tuple(int(c) for c in color), 1, cv2.LINE_AA)
    return canvas


# Per-channel steps that shade an object's class colour by its track (or segment) id.
THING_SHADE_STEPS = np.array([37, 59, 83])
THING_SHADE_RANGE = 97  # shades in [-48, 48] per channel


def panoptic_colors(result: PanopticResult, label_set: LabelSet) -> np.ndarray:
    """RGB view (H, W, 3): stuff in its class colour, each object in a shade of its class colour
    given by its track id (so it keeps it across frames) or, untracked, its segment id; void black."""
    palette = label_set.palette().astype(np.int64)
    table = np.zeros((max((segment.id for segment in result.segments), default=0) + 1, 3), np.uint8)
    for segment in result.segments:
        color = palette[segment.class_id]
        if segment.is_thing:
            shade = (segment.track_id or segment.id) * THING_SHADE_STEPS % THING_SHADE_RANGE - THING_SHADE_RANGE // 2
            color = np.clip(color + shade, 0, 255)
        table[segment.id] = color
    return table[result.segment_ids]
