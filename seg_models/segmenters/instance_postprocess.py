"""From the Mask R-CNN graph's fixed-size outputs to instances at the camera's resolution.

Plain functions (numpy/torch, no ROS) so the node, the evaluation tools and the benchmark share
them. Masks are pasted with torchvision's semantics (1-pixel padded 28x28 probabilities, box
expanded by the same factor, one bilinear resize straight to the camera-resolution box), but only
inside the instance's box: no full-frame buffer per instance.
"""
from __future__ import annotations

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
    track_id: int = 0  # the object's id across frames (seg_models.tracking); 0: not tracked or not confirmed yet


@dataclass
class InstanceResult:
    """All instances of one image, highest score first."""

    image_size: tuple[int, int]  # (height, width)
    instances: list[Instance] = field(default_factory=list)
    # Below the published score, at or above InstanceFilter.track_low_score: for a tracker's second
    # stage only (MaskTracker.track publishes those that continue a track); never published as they are.
    low_score_instances: list[Instance] = field(default_factory=list)

    @classmethod
    def split_by_score(cls, image_size: tuple[int, int], instances: list[Instance],
                       score_threshold: float) -> 'InstanceResult':
        """The result of ``instances`` (highest score first): those at or above ``score_threshold``
        published, the others kept for tracking."""
        return cls(image_size, [instance for instance in instances if instance.score >= score_threshold],
                   [instance for instance in instances if instance.score < score_threshold])

    def full_frame_masks(self) -> np.ndarray:
        """(M, H, W) bool masks at image size, e.g. for evaluation or drawing."""
        masks = np.zeros((len(self.instances), *self.image_size), dtype=bool)
        for index, instance in enumerate(self.instances):
            self.paste(instance, masks[index])
        return masks

    def full_frame_mask(self, instance: Instance) -> np.ndarray:
        """One instance's (H, W) bool mask at image size: one at a time where a frame's would not fit."""
        return self.paste(instance, np.zeros(self.image_size, dtype=bool))

    @staticmethod
    def paste(instance: Instance, frame_mask: np.ndarray) -> np.ndarray:
        x, y, roi_width, roi_height = instance.roi
        frame_mask[y:y + roi_height, x:x + roi_width] = instance.mask
        return frame_mask


def box_rois(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Integer pixels (x, y, width, height) touched by continuous x1y1x2y2 ``boxes`` (D, 4),
    clipped to the image, at least one pixel each: (D, 4) int64."""
    height, width = image_size
    x0 = np.clip(np.floor(boxes[:, 0]), 0, width - 1).astype(np.int64)
    y0 = np.clip(np.floor(boxes[:, 1]), 0, height - 1).astype(np.int64)
    x1 = np.minimum(np.maximum(np.ceil(boxes[:, 2]).astype(np.int64), x0 + 1), width)
    y1 = np.minimum(np.maximum(np.ceil(boxes[:, 3]).astype(np.int64), y0 + 1), height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def box_roi(box: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box_rois`` of one box, as a tuple."""
    return tuple(int(value) for value in box_rois(np.asarray(box, np.float64)[None], image_size)[0])


@dataclass
class Detection:
    """One published detection of a batch position, before its mask is pasted."""

    index: int  # row in the graph's padded outputs
    class_id: int
    score: float
    box: np.ndarray  # (4,) float32 x1y1x2y2 in camera pixels, clipped to the image
    roi: tuple[int, int, int, int]


def published(outputs: dict[str, np.ndarray], position: int, box_scale: np.ndarray, image_size: tuple[int, int],
              class_map: np.ndarray, output_filter: InstanceFilter) -> list[Detection]:
    """The detections of image ``position`` that ``output_filter`` publishes, highest score first, with
    boxes in camera pixels; ``box_scale`` (x, y, x, y) takes boxes from network to camera pixels
    (``CameraTransform``).

    ``class_map[network class index]`` is the output label-set id, or -1 for classes the output
    label set does not have (background, COCO placeholders, unmapped classes).
    """
    count = int(outputs['num_detections'][position])
    scores = outputs['scores'][position, :count]
    labels = outputs['labels'][position, :count].astype(np.int64)
    class_ids = class_map[labels]
    keep = (scores >= output_filter.lowest_kept_score) & (class_ids >= 0)
    if output_filter.class_ids:
        keep &= np.isin(class_ids, output_filter.class_ids)
    kept = np.flatnonzero(keep)
    kept = kept[np.argsort(-scores[kept], kind='stable')][:output_filter.max_instances]
    height, width = image_size
    boxes = np.clip(outputs['boxes'][position, kept] * box_scale, 0, [width, height, width, height]).astype(np.float32)
    rois = box_rois(boxes, image_size).tolist()
    return [Detection(index, class_id, score, box, tuple(roi)) for index, class_id, score, box, roi in
            zip(kept.tolist(), class_ids[kept].tolist(), scores[kept].tolist(), boxes, rois)]


def paste_masks_in_rois(mask_probs: torch.Tensor, detections: list[Detection], threshold: float) -> list[torch.Tensor]:
    """Each detection's thresholded full-resolution mask inside its roi, as a bool tensor on
    ``mask_probs``' device (the host, or the GPU the graph ran on), equal to cropping torchvision's
    ``paste_masks_in_image(...) > threshold`` to the roi.

    ``mask_probs`` is (K, M, M) float: one image's padded graph output. On the CPU each mask is
    resized on its own (``F.interpolate``, torchvision's own call); on a GPU that would be a few
    launches per instance, 3.9 ms for 50 instances on an H200 (18% of the model's time), so all
    of them are sampled at once (``paste_masks_gathered``).
    """
    if not detections:
        return []
    padded, expanded = _padded_masks_and_boxes(mask_probs, detections)
    if mask_probs.device.type == 'cuda':
        return paste_masks_gathered(padded, expanded, detections, threshold)
    crops = []
    for mask, (x_a, y_a, x_b, y_b), detection in zip(padded, expanded.tolist(), detections):
        paste_width, paste_height = max(x_b - x_a + 1, 1), max(y_b - y_a + 1, 1)
        roi_x, roi_y, roi_width, roi_height = detection.roi
        # Overlap of the pasted area [x_a, x_a + paste_width) with the roi.
        left, right = max(x_a, roi_x), min(x_a + paste_width, roi_x + roi_width)
        top, bottom = max(y_a, roi_y), min(y_a + paste_height, roi_y + roi_height)
        if left >= right or top >= bottom:
            crops.append(torch.zeros((roi_height, roi_width), dtype=torch.bool, device=mask_probs.device))
            continue
        resized = F.interpolate(mask[None], size=(paste_height, paste_width), mode='bilinear',
                                align_corners=False)[0, 0]
        inside = resized[top - y_a:bottom - y_a, left - x_a:right - x_a] > threshold
        if (right - left, bottom - top) == (roi_width, roi_height):  # the usual case: the paste covers the roi
            crops.append(inside)
            continue
        crop = torch.zeros((roi_height, roi_width), dtype=torch.bool, device=mask_probs.device)
        crop[top - roi_y:bottom - roi_y, left - roi_x:right - roi_x] = inside
        crops.append(crop)
    return crops


def _padded_masks_and_boxes(mask_probs: torch.Tensor, detections: list[Detection]):
    """The detections' masks padded by ``MASK_PADDING`` (D, 1, M + 2, M + 2) on their device, and
    their boxes expanded by the same factor, as integer x1y1x2y2 (D, 4) on the host: torchvision's
    ``paste_masks_in_image`` preparation."""
    rows = torch.tensor([detection.index for detection in detections], device=mask_probs.device)
    padded, scale = expand_masks(mask_probs[rows][:, None].float(), padding=MASK_PADDING)
    boxes = torch.from_numpy(np.stack([detection.box for detection in detections]))
    return padded, expand_boxes(boxes, scale).to(torch.int64)


def paste_masks_gathered(padded: torch.Tensor, expanded: torch.Tensor, detections: list[Detection],
                         threshold: float) -> list[torch.Tensor]:
    """Every detection's roi mask in one pass over all roi pixels: each pixel samples its padded
    mask bilinearly with the arithmetic of PyTorch's ``upsample_bilinear2d`` (half-pixel source
    index clamped at 0, the upper neighbour clamped at the edge), as ``F.interpolate`` to the
    expanded box's size would, then thresholded. A few dozen launches, whatever the number of
    instances."""
    device, size = padded.device, padded.shape[-1]
    rois = torch.tensor([detection.roi for detection in detections], dtype=torch.int64)
    paste_width = (expanded[:, 2] - expanded[:, 0] + 1).clamp(min=1)
    paste_height = (expanded[:, 3] - expanded[:, 1] + 1).clamp(min=1)
    areas = rois[:, 2] * rois[:, 3]
    # Per-detection integers, uploaded once: x_a, y_a, paste width and height, roi x, y, width, first pixel.
    table = torch.stack([expanded[:, 0], expanded[:, 1], paste_width, paste_height, rois[:, 0], rois[:, 1],
                         rois[:, 2], torch.cumsum(areas, 0) - areas], 1).to(device, non_blocking=True)
    total = int(areas.sum())
    owner = torch.repeat_interleave(torch.arange(len(detections), device=device), areas.to(device),
                                    output_size=total)
    x_a, y_a, width, height, roi_x, roi_y, roi_width, first = table[owner].unbind(1)
    local = torch.arange(total, device=device) - first
    row = torch.div(local, roi_width, rounding_mode='floor')
    u, v = roi_y + row - y_a, roi_x + (local - row * roi_width) - x_a  # pixel in the pasted box
    inside = (u >= 0) & (u < height) & (v >= 0) & (v < width)

    def source(destination, output_size):
        """Lower index, upper index and upper weight of each destination pixel (PyTorch's arithmetic)."""
        position = ((size / output_size.float()) * (destination.float() + 0.5) - 0.5).clamp(min=0)
        lower = position.to(torch.int64)
        upper = lower + (lower < size - 1).to(torch.int64)
        return lower, upper, position - lower.float()

    y0, y1, y_weight = source(u.clamp(min=0), height)
    x0, x1, x_weight = source(v.clamp(min=0), width)
    masks = padded[:, 0].reshape(-1)
    base = owner * size * size
    y0, y1 = (base + y0.clamp(max=size - 1) * size), (base + y1.clamp(max=size - 1) * size)
    x0, x1 = x0.clamp(max=size - 1), x1.clamp(max=size - 1)
    value = (1 - y_weight) * ((1 - x_weight) * masks[y0 + x0] + x_weight * masks[y0 + x1]) + \
        y_weight * ((1 - x_weight) * masks[y1 + x0] + x_weight * masks[y1 + x1])
    pasted = inside & (value > threshold)
    return [piece.view(detection.roi[3], detection.roi[2])
            for piece, detection in zip(pasted.split(areas.tolist()), detections)]


def instance_result(image_size: tuple[int, int], detections: list[Detection], masks: list[np.ndarray],
                    class_names: list[str], score_threshold: float) -> InstanceResult:
    """Detections and their roi masks as one image's result (``InstanceResult.split_by_score``)."""
    return InstanceResult.split_by_score(image_size, [
        Instance(class_id=detection.class_id, class_name=class_names[detection.class_id], score=detection.score,
                 box=tuple(float(v) for v in detection.box), roi=detection.roi, mask=mask)
        for detection, mask in zip(detections, masks)], score_threshold)


def instances_from_outputs(outputs: dict[str, np.ndarray], position: int, box_scale: np.ndarray,
                           image_size: tuple[int, int], class_map: np.ndarray, class_names: list[str],
                           output_filter: InstanceFilter) -> InstanceResult:
    """Image ``position`` of a batch of host graph outputs as camera-resolution instances (see
    ``published``), masks pasted on the host."""
    detections = published(outputs, position, box_scale, image_size, class_map, output_filter)
    crops = paste_masks_in_rois(torch.from_numpy(np.ascontiguousarray(outputs['mask_probs'][position])),
                                detections, output_filter.mask_threshold)
    return instance_result(image_size, detections, [crop.numpy() for crop in crops], class_names,
                           output_filter.score_threshold)
