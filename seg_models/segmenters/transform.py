"""Camera images <-> the network's batch, both ways, in one object.

As torchvision's ``GeneralizedRCNNTransform`` resizes images for the network and maps detections
back, ``CameraTransform`` turns RGB camera images of any size into the uint8 NCHW batch a
deployment graph takes, and brings what the network returns back to each camera's resolution:
per-pixel maps (class ids, confidence) and boxes. Both segmenters and INT8 calibration use it, so
every path feeds the network the same pixels. ``frames_at_input_size`` is the same resize for
frames already on a GPU (seg_models.backends.device_pipeline), where it is done after one uint8 upload.
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Size = tuple[int, int]  # (height, width)


class CameraTransform:
    """``input_size`` (height, width) fixes the network input; None runs each image at its own size."""

    def __init__(self, input_size: Optional[Size] = None) -> None:
        self.input_size = tuple(input_size) if input_size is not None else None

    def input_size_for(self, image_size: Size) -> Size:
        """The size an image of ``image_size`` has in the network."""
        return self.input_size or tuple(image_size[:2])

    def groups(self, images: Sequence[np.ndarray], by_camera_size: bool = False) -> list[list[int]]:
        """Indices of ``images`` that share a network size, so each group is one batch (one group
        with a fixed input size; several cameras of different resolutions otherwise). With
        ``by_camera_size`` they share the camera size too: frames resized on the device go up as
        one (N, H, W, 3) batch."""
        groups: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):
            key = (self.input_size_for(image.shape), tuple(image.shape[:2]) if by_camera_size else None)
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 (H, W, 3) images of one network size -> C-contiguous uint8 (N, 3, h, w), each
        resized (bilinear) where its size differs from the network's."""
        height, width = self.input_size_for(images[0].shape)
        resized = [image if image.shape[:2] == (height, width)
                   else cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
                   for image in images]
        return np.ascontiguousarray(np.stack(resized).transpose(0, 3, 1, 2))

    @staticmethod
    def map_to_image(values: np.ndarray, image_size: Size, nearest: bool) -> np.ndarray:
        """A per-pixel network output (h, w) at ``image_size``: nearest neighbour for ids, bilinear
        for continuous values."""
        height, width = image_size
        if values.shape == (height, width):
            return values
        return cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)

    @staticmethod
    def argmax_at_image_size(logits: np.ndarray, image_size: Size, dtype: np.dtype) -> np.ndarray:
        """Class ids (h, w) at ``image_size`` of (C, h', w') float32 ``logits``: each class's logits
        upsampled bilinearly (half-pixel centres, as the GPU path's ``F.interpolate``), then the
        argmax (the first of equal maxima, as torch's). One class at a time, keeping a running
        maximum: cv2's single-channel resize is ~6x faster than resizing all classes at once."""
        height, width = image_size
        best = cv2.resize(np.ascontiguousarray(logits[0], np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        class_ids = np.zeros((height, width), dtype)
        for class_id in range(1, len(logits)):
            upsampled = cv2.resize(np.ascontiguousarray(logits[class_id], np.float32), (width, height),
                                   interpolation=cv2.INTER_LINEAR)
            better = upsampled > best
            class_ids[better] = class_id
            np.maximum(best, upsampled, out=best)
        return class_ids

    def box_scale(self, image_size: Size) -> np.ndarray:
        """Factors (x, y, x, y) taking x1y1x2y2 boxes from network pixels to ``image_size`` pixels."""
        input_size = self.input_size_for(image_size)
        return np.array([image_size[1] / input_size[1], image_size[0] / input_size[0]] * 2, dtype=np.float32)


def frames_at_input_size(frames: torch.Tensor, input_size: Size) -> torch.Tensor:
    """uint8 camera frames (N, H, W, 3) on any device -> float (N, 3, h, w) at ``input_size``,
    bilinear (half-pixel centres, as ``CameraTransform.batch``), left unrounded on 0..255."""
    images = frames.permute(0, 3, 1, 2).float().contiguous()
    if tuple(images.shape[-2:]) == tuple(input_size):
        return images
    return F.interpolate(images, size=tuple(input_size), mode='bilinear', align_corners=False)
