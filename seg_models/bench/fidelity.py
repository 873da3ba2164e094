"""How closely a graph at lower precision answers like the fp32 graph, on the same frames.

``seg-models bench --precisions fp32 fp16 int8`` prints these figures; the precision tests bound
them (fp16 semantic at least 99.5% identical pixels, int8 at least 97%; int8 instances: the same
detections, box and mask IoU at least 0.9 for each matched pair). Both also print fp32 against
itself on the frames with sensor noise (``with_sensor_noise``), the yardstick: answers that move
under noise a camera makes anyway move at any lower precision too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from seg_models.segmenters.instance_postprocess import Instance, InstanceResult
from seg_models.segmenters.semantic import SemanticResult

# Detections within this much of the score threshold may fall on either side of it at another
# precision; they are not counted as missing or extra.
BORDERLINE_SCORE = 0.05
INSTANCE_IOU_BOUND = 0.9
SENSOR_NOISE_GREY_LEVELS = 1
SENSOR_NOISE = f'+-{SENSOR_NOISE_GREY_LEVELS} grey-level noise'  # how reports name it


def with_sensor_noise(frames: Sequence[np.ndarray], grey_levels: int = SENSOR_NOISE_GREY_LEVELS,
                      seed: int = 0) -> list[np.ndarray]:
    """``frames`` with independent uniform noise of up to ``grey_levels`` per pixel and channel,
    less than a camera's own noise: how far fp32 moves on them is the yardstick for how far a
    lower precision moves (a network that moves more than the bounds on these frames cannot be
    held to them at any precision)."""
    rng = np.random.default_rng(seed)
    return [np.clip(frame.astype(np.int16) + rng.integers(-grey_levels, grey_levels + 1, frame.shape), 0, 255)
            .astype(np.uint8) for frame in frames]


def identical_pixels(reference: Sequence[SemanticResult], other: Sequence[SemanticResult]) -> float:
    """Fraction of all pixels of all images whose class id is the same in both."""
    same = sum(int(np.count_nonzero(a.class_ids == b.class_ids)) for a, b in zip(reference, other))
    total = sum(a.class_ids.size for a in reference)
    return same / total if total else 1.0


@dataclass
class InstanceAgreement:
    """Detections of ``other`` matched one to one with the reference's (same class, best box IoU)."""

    reference: int  # detections in the reference
    matched: int
    missing: int  # reference detections clearly above the threshold without a match
    extra: int  # other detections clearly above the threshold without a match
    box_ious: tuple[float, ...]  # one per matched pair
    mask_ious: tuple[float, ...]

    @property
    def min_box_iou(self) -> float:
        return min(self.box_ious, default=1.0)

    @property
    def min_mask_iou(self) -> float:
        return min(self.mask_ious, default=1.0)

    @property
    def median_box_iou(self) -> float:
        return _median(self.box_ious)

    @property
    def median_mask_iou(self) -> float:
        return _median(self.mask_ious)

    def within_instance_bounds(self) -> bool:
        """The bounds issue 13 sets for lower-precision instance graphs: the same detections, and
        box and mask IoU at least ``INSTANCE_IOU_BOUND`` for each matched pair."""
        return (self.missing == 0 and self.extra == 0 and self.min_box_iou >= INSTANCE_IOU_BOUND
                and self.min_mask_iou >= INSTANCE_IOU_BOUND)

    def describe(self) -> str:
        """One line; the medians tell a few pairs that moved from every box moving a little."""
        return (f'{self.matched}/{self.reference} detections matched, {self.missing} missing, {self.extra} extra, '
                f'box IoU >= {self.min_box_iou:.3f} (median {self.median_box_iou:.3f}), '
                f'mask IoU >= {self.min_mask_iou:.3f} (median {self.median_mask_iou:.3f})')


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else 1.0


def _box_iou(a: tuple, b: tuple) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def instance_agreement(reference: Sequence[InstanceResult], other: Sequence[InstanceResult],
                       score_threshold: float) -> InstanceAgreement:
    """Match each image's detections greedily by box IoU within a class; a detection scoring less
    than ``BORDERLINE_SCORE`` above ``score_threshold`` may go unmatched without counting."""
    counts = dict(reference=0, matched=0, missing=0, extra=0)
    box_ious, mask_ious = [], []
    clear = score_threshold + BORDERLINE_SCORE
    for want, got in zip(reference, other):
        want_masks, got_masks = want.full_frame_masks(), got.full_frame_masks()
        unmatched = set(range(len(got.instances)))
        counts['reference'] += len(want.instances)
        for index, instance in enumerate(want.instances):
            match = _best_match(instance, got.instances, unmatched)
            if match is None:
                counts['missing'] += instance.score >= clear
                continue
            unmatched.discard(match)
            counts['matched'] += 1
            box_ious.append(_box_iou(instance.box, got.instances[match].box))
            mask_ious.append(_mask_iou(want_masks[index], got_masks[match]))
        counts['extra'] += sum(got.instances[index].score >= clear for index in unmatched)
    return InstanceAgreement(**counts, box_ious=tuple(box_ious), mask_ious=tuple(mask_ious))



def semantic_agreement(reference: Sequence[SemanticResult], other: Sequence[SemanticResult], segmenter) -> str:
    """The semantic task's agreement line (seg_models.tasks): identical pixels."""
    return f'{100 * identical_pixels(reference, other):.2f}% identical pixels'


def instance_agreement_line(reference: Sequence[InstanceResult], other: Sequence[InstanceResult], segmenter) -> str:
    """The instance task's agreement line (seg_models.tasks): matched detections and their IoUs."""
    return instance_agreement(reference, other, segmenter.output_filter.score_threshold).describe()

def _best_match(instance: Instance, candidates: Sequence[Instance], free: set[int]):
    """The free candidate of the same class with the highest box IoU (above 0.5), or None."""
    best, best_iou = None, 0.5
    for index in free:
        if candidates[index].class_id == instance.class_id:
            iou = _box_iou(instance.box, candidates[index].box)
            if iou > best_iou:
                best, best_iou = index, iou
    return best
