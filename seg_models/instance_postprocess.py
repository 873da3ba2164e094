"""From the Mask R-CNN graph's fixed-size outputs to instances at the camera's resolution.

Plain functions (numpy/torch, no ROS) so the node, the evaluation tools and the benchmark share
them. Masks are pasted with torchvision's semantics (1-pixel padded 28x28 probabilities, box
expanded by the same factor, one bilinear resize straight to the camera-resolution box), but only
inside the instance's box: no full-frame buffer per instance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

from seg_models.configs import InstanceFilter

MASK_PADDING = 1  # torchvision's paste_masks_in_image default


@dataclass
class Instance:
    """One detected instance in camera pixels."""

    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 (continuous pixel coordinates)
    roi: tuple[int, int, int, int]  # x, y, width, height: the integer pixels of the box, the mask's frame
    mask: np.ndarray  # (roi height, roi width) bool


@dataclass
class InstanceResult:
    """All instances of one image, highest score first."""

    image_size: tuple[int, int]  # (height, width)
    instances: list[Instance] = field(default_factory=list)

    def full_frame_masks(self) -> np.ndarray:
        """(M, H, W) bool masks at image size, e.g. for evaluation or drawing."""
        height, width = self.image_size
        masks = np.zeros((len(self.instances), height, width), dtype=bool)
        for index, instance in enumerate(self.instances):
            x, y, roi_width, roi_height = instance.roi
            masks[index, y:y + roi_height, x:x + roi_width] = instance.mask
        return masks


def box_roi(box: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixels (x, y, width, height) touched by a continuous box, clipped to the image, at
    least one pixel."""
    height, width = image_size
    x0 = min(max(int(math.floor(box[0])), 0), width - 1)
    y0 = min(max(int(math.floor(box[1])), 0), height - 1)
    x1 = min(max(int(math.ceil(box[2])), x0 + 1), width)
    y1 = min(max(int(math.ceil(box[3])), y0 + 1), height)
    return x0, y0, x1 - x0, y1 - y0


def paste_mask_in_roi(mask_probs: torch.Tensor, box: torch.Tensor, roi: tuple[int, int, int, int],
                      threshold: float) -> np.ndarray:
    """The thresholded full-resolution mask inside ``roi``, identical to cropping torchvision's
    ``paste_masks_in_image(...) > threshold`` to ``roi``.

    ``mask_probs`` is (M, M) float, ``box`` (4,) float in camera pixels.
    """
    padded, scale = expand_masks(mask_probs[None, None], padding=MASK_PADDING)
    x_a, y_a, x_b, y_b = (int(v) for v in expand_boxes(box[None].float(), scale).to(torch.int64)[0])
    paste_width, paste_height = max(x_b - x_a + 1, 1), max(y_b - y_a + 1, 1)
    roi_x, roi_y, roi_width, roi_height = roi
    crop = np.zeros((roi_height, roi_width), dtype=bool)
    # Overlap of the pasted area [x_a, x_a + paste_width) with the roi.
    left, right = max(x_a, roi_x), min(x_a + paste_width, roi_x + roi_width)
    top, bottom = max(y_a, roi_y), min(y_a + paste_height, roi_y + roi_height)
    if left >= right or top >= bottom:
        return crop
    resized = F.interpolate(padded, size=(paste_height, paste_width), mode='bilinear', align_corners=False)[0, 0]
    region = resized[top - y_a:bottom - y_a, left - x_a:right - x_a] > threshold
    crop[top - roi_y:bottom - roi_y, left - roi_x:right - roi_x] = region.numpy()
    return crop


def instances_from_outputs(outputs: dict[str, np.ndarray], position: int, box_scale: np.ndarray,
                           image_size: tuple[int, int], class_map: np.ndarray, class_names: list[str],
                           selection: InstanceFilter) -> InstanceResult:
    """Turn image ``position`` of a batch of graph outputs into camera-resolution instances;
    ``box_scale`` (x, y, x, y) takes boxes from network to camera pixels (``CameraTransform``).

    ``class_map[network class index]`` is the output label-set id, or -1 for classes the output
    label set does not have (background, COCO placeholders, unmapped classes).
    """
    count = int(outputs['num_detections'][position])
    scores = outputs['scores'][position, :count]
    labels = outputs['labels'][position, :count].astype(np.int64)
    class_ids = class_map[labels]
    keep = (scores >= selection.score_threshold) & (class_ids >= 0)
    if selection.class_ids:
        keep &= np.isin(class_ids, selection.class_ids)
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(-scores[kept], kind='stable')][:selection.max_instances]
    height, width = image_size
    result = InstanceResult(image_size=image_size)
    for index in kept:
        box = outputs['boxes'][position, index] * box_scale
        box = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
        roi = box_roi(box, image_size)
        mask = paste_mask_in_roi(torch.from_numpy(np.ascontiguousarray(outputs['mask_probs'][position, index])),
                                 torch.from_numpy(box), roi, selection.mask_threshold)
        class_id = int(class_ids[index])
        result.instances.append(Instance(class_id=class_id, class_name=class_names[class_id],
                                         score=float(scores[index]), box=tuple(float(v) for v in box),
                                         roi=roi, mask=mask))
    return result
