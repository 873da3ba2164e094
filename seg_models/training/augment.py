"""Training-time augmentation of an image with its ground truth, by torchvision.transforms.v2.

The image and its masks (semantic ids, instance masks) go through one v2 pipeline as tv_tensors,
so every geometric step moves them together; photometric steps touch the image only. Randomness
comes from a per-sample generator seed (``augment(..., seed)``), so a resumed or distributed run
sees exactly the samples an uninterrupted one-process run sees.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from seg_models.training.recipes import Recipe

IGNORE = 255  # training target id of pixels that carry no loss


def _scale_and_flip(recipe: Recipe, base_size: tuple[int, int]) -> list:
    low, high = recipe.scale_range
    steps = []
    if (low, high) != (1.0, 1.0):
        # mmseg's RandomResize(scale=base, ratio_range=(low, high), keep_ratio=True): the shorter side of
        # the base size times a uniform ratio
        steps.append(v2.RandomShortestSize(min_size=list(range(int(min(base_size) * low),
                                                                   int(min(base_size) * high) + 1, 8)),
                                           antialias=True))
    if recipe.flip:
        steps.append(v2.RandomHorizontalFlip(recipe.flip))
    return steps


def _photometric() -> v2.Transform:
    """mmseg's PhotoMetricDistortion, approximately: brightness +-32 grey levels, contrast and
    saturation x0.5-1.5, hue +-18 degrees, in random order."""
    return v2.RandomApply([v2.ColorJitter(brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                                          hue=18 / 360)], p=0.5)


def semantic_pipeline(recipe: Recipe, base_size: tuple[int, int], crop_size: tuple[int, int]) -> v2.Compose:
    steps = _scale_and_flip(recipe, base_size)
    steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}))
    if recipe.photometric:
        steps.append(_photometric())
    return v2.Compose(steps)


def instance_pipeline(recipe: Recipe, base_size: tuple[int, int]) -> v2.Compose:
    steps = _scale_and_flip(recipe, base_size)
    if recipe.photometric:
        steps.append(_photometric())
    steps.append(v2.SanitizeBoundingBoxes(min_size=2))
    return v2.Compose(steps)


def augment_semantic(pipeline: v2.Compose, rgb: np.ndarray, target: np.ndarray, seed: int,
                     max_class_ratio: float = 1.0, attempts: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (3, h, w) image, int64 (h, w) target) of one sample, drawn with ``seed``; a crop in
    which one class covers more than ``max_class_ratio`` of the labelled pixels is drawn again (as
    mmseg's cat_max_ratio), up to ``attempts`` times."""
    image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
    mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(target)))
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for _ in range(attempts):
            out_image, out_mask = pipeline(image, mask)
            counts = torch.bincount(out_mask[out_mask != IGNORE].flatten().long())
            if max_class_ratio >= 1.0 or counts.numel() < 2 or counts.max() <= max_class_ratio * counts.sum():
                break
    finally:
        torch.random.set_rng_state(generator_state)
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).long()


def augment_instances(pipeline: v2.Compose, rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                      masks: np.ndarray, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(float (3, h, w) image in 0..1, Mask R-CNN target dict) of one sample, drawn with ``seed``."""
    height, width = rgb.shape[:2]
    image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
    target = {'boxes': tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                                format='XYXY', canvas_size=(height, width)),
              'labels': torch.as_tensor(labels, dtype=torch.int64),
              'masks': tv_tensors.Mask(torch.from_numpy(masks.astype(np.uint8)))}
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        image, target = pipeline(image, target)
    finally:
        torch.random.set_rng_state(generator_state)
    return (image.as_subclass(torch.Tensor).float() / 255,
            {name: value.as_subclass(torch.Tensor) for name, value in target.items()})


AUGMENTATION, DROPOUT = 0, 1  # the run's random streams


def sample_seed(run_seed: int, position: int, stream: int = AUGMENTATION) -> int:
    """The seed of ``position`` (a sample's place in the whole run, or a micro-batch's) in one of the
    run's streams: the same in a resumed, a distributed and a one-process run."""
    return int(np.random.SeedSequence([run_seed, stream, position]).generate_state(1)[0] & 0x7FFFFFFF)
