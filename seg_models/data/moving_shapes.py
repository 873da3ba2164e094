"""A deterministic synthetic sequence with known object ids: the tracker's tests and evaluation.

Three filled shapes move over a background (a camera frame, e.g. CamVid's, when a path is given;
else seeded grey noise), drawn back to front so that the ones in front hide the others:

* object 1, a thin bar "/" (class bar), at the back, comes from the left;
* object 2, a thin bar "\\" (class bar), in front, comes from the right;
* object 3, a disc (class disc), in front of both, rolls left to right below them and hides a
  bar's lower end twice (occlusion).

The bars meet in an X at the sequence's middle frame (``meeting_frame``: their boxes almost the
same, their masks crossing at one small square, where the front bar also cuts the back one in two)
and turn back the way they came. A constant-velocity prediction then puts each bar's box where
the *other* bar's box is, so association by box IoU swaps their ids; their masks still tell them
apart ("/" against "\\"), so association by mask IoU keeps them (test/test_tracking.py).

Each frame gives the RGB image, the ground truth (object id, class id, box-cropped visible mask;
``object_ids`` is the full-frame id image) and the answers of a perfect detector as ``Instance``
objects with seeded scores (``ShapesFrame.instances``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from seg_models.data.frame_sources import read_rgb
from seg_models.segmenters.instance_postprocess import Instance, box_roi

CLASS_NAMES = ('disc', 'bar')
DISC, BAR = 0, 1
BACK_BAR, FRONT_BAR, ROLLING_DISC = 1, 2, 3  # object ids, drawn in this order (back to front)
COLOURS = {BACK_BAR: (230, 60, 40), FRONT_BAR: (40, 90, 230), ROLLING_DISC: (240, 200, 30)}
DETECTOR_SCORES = (0.7, 1.0)  # the perfect detector's scores are drawn uniformly from this range


@dataclass(frozen=True)
class ShapeTruth:
    """One visible object of a frame."""

    object_id: int  # the true id, the same in every frame
    class_id: int  # index in CLASS_NAMES
    box: tuple[float, float, float, float]  # x1, y1, x2, y2: the tight box of the visible pixels
    roi: tuple[int, int, int, int]  # x, y, width, height: the box's pixels, the mask's frame
    mask: np.ndarray  # (roi height, roi width) bool: the visible pixels


@dataclass
class ShapesFrame:
    index: int
    stamp: float  # seconds
    rgb: np.ndarray  # (H, W, 3) uint8
    object_ids: np.ndarray  # (H, W) uint8: the object id seen at each pixel, 0 for the background
    truths: list[ShapeTruth]  # the visible objects, in id order
    seed: int

    def instances(self) -> list[Instance]:
        """The perfect detector's answer: each visible object as an Instance with the true box and
        mask and a seeded score, highest score first (as segmenters give them)."""
        scores = np.random.default_rng([self.seed, self.index]).uniform(*DETECTOR_SCORES, len(self.truths))
        found = [Instance(class_id=truth.class_id, class_name=CLASS_NAMES[truth.class_id], score=float(score),
                          box=truth.box, roi=truth.roi, mask=truth.mask) for truth, score in zip(self.truths, scores)]
        return sorted(found, key=lambda instance: -instance.score)


def instance_from_frame_mask(mask: np.ndarray, class_id: int, score: float) -> Instance:
    """An Instance of the non-empty full-frame bool ``mask``: its tight box, and the mask cropped to
    the box's pixels."""
    rows, columns = np.nonzero(mask)
    box = (float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1))
    x, y, width, height = box_roi(np.array(box), mask.shape)
    return Instance(class_id=class_id, class_name=CLASS_NAMES[class_id], score=score, box=box,
                    roi=(x, y, width, height), mask=mask[y:y + height, x:x + width].copy())


def meeting_frame(frame_count: int) -> int:
    """The frame where the two bars meet in an X (their centres 2 pixels apart) and turn back."""
    return frame_count // 2


def moving_shapes(frame_count: int = 40, image_size: tuple[int, int] = (240, 320),
                  background: Optional[Path] = None, frame_rate: float = 10.0, seed: int = 0) -> Iterator[ShapesFrame]:
    """The sequence's frames, stamped from 0 s at ``frame_rate``; ``background``: an image file
    resized to ``image_size`` (height, width), else seeded grey noise."""
    height, width = image_size
    scale = min(height, width) / 240
    half_extent = round(35 * scale)  # a bar's half width and half height (45 degrees)
    thickness = max(3, round(10 * scale))
    step = max(2, round(3 * scale))  # pixels per frame of each bar; more than the 1 pixel left at the meeting
    disc_radius, disc_step = round(16 * scale), max(1, round(6 * scale))
    centre_x, centre_y = width // 2, height // 2
    meeting = meeting_frame(frame_count)
    backdrop = _background(background, image_size, seed)
    for index in range(frame_count):
        offset = 1 + step * abs(index - meeting)  # each bar's distance from the centre: shrinks, then grows
        object_ids = np.zeros(image_size, np.uint8)
        for object_id, x in ((BACK_BAR, centre_x - offset), (FRONT_BAR, centre_x + offset)):
            rising = 1 if object_id == BACK_BAR else -1  # "/" rises to the right, "\" falls
            cv2.line(object_ids, (x - half_extent, centre_y + rising * half_extent),
                     (x + half_extent, centre_y - rising * half_extent), object_id, thickness, cv2.LINE_8)
        disc_centre = (round(20 * scale) + disc_step * index, centre_y + half_extent + round(2 * scale))
        cv2.circle(object_ids, disc_centre, disc_radius, ROLLING_DISC, cv2.FILLED, cv2.LINE_8)
        rgb = backdrop.copy()
        truths = []
        for object_id, colour in COLOURS.items():
            visible = object_ids == object_id
            if not visible.any():
                continue
            rgb[visible] = colour
            found = instance_from_frame_mask(visible, DISC if object_id == ROLLING_DISC else BAR, 1.0)
            truths.append(ShapeTruth(object_id, found.class_id, found.box, found.roi, found.mask))
        yield ShapesFrame(index, index / frame_rate, rgb, object_ids, truths, seed)


def _background(path: Optional[Path], image_size: tuple[int, int], seed: int) -> np.ndarray:
    height, width = image_size
    if path is not None:
        return cv2.resize(read_rgb(Path(path)), (width, height), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(seed).normal(110, 20, (height, width, 1))
    return np.repeat(np.clip(noise, 0, 255).astype(np.uint8), 3, axis=2)
