"""Colour views of class-id images, for people looking at outputs (not for consumers)."""
from __future__ import annotations

import numpy as np

from seg_models.labels import LabelSet


def colorize(class_ids: np.ndarray, label_set: LabelSet) -> np.ndarray:
    """RGB image (H, W, 3) with each pixel in its class's colour; the ignore id is black."""
    return label_set.palette()[class_ids]


def overlay(rgb: np.ndarray, class_ids: np.ndarray, label_set: LabelSet, alpha: float = 0.5) -> np.ndarray:
    """The camera image blended with the class colours (``alpha`` = weight of the colours)."""
    colors = colorize(class_ids, label_set).astype(np.float32)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colors
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
