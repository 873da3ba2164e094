"""Training-time augmentation of an image with its ground truth, by torchvision.transforms.v2.

The image and its masks (semantic ids, instance masks) go through one v2 pipeline as tv_tensors,
so every geometric step moves them together; photometric steps touch the image only. Randomness
comes from a per-sample generator seed (``augment(..., seed)``), so a resumed or distributed run
sees exactly the samples an uninterrupted one-process run sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
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


class PhotometricDistortion(v2.Transform):
    """mmseg's PhotoMetricDistortion: each with probability 0.5, brightness +-32 grey levels,
    contrast x0.5-1.5 (before or after the rest), saturation x0.5-1.5 and hue +-18 (OpenCV's 0-180
    scale) in HSV, through OpenCV on uint8 as mmseg does it (torchvision's hue is ~40x slower)."""

    _transformed_types = (tv_tensors.Image,)

    def make_params(self, flat_inputs: list) -> dict:
        draws = torch.rand(9).tolist()
        return {'brightness': (draws[0] < 0.5) * (draws[1] * 64 - 32),
                'contrast': 0.5 + draws[3] if draws[2] < 0.5 else 1.0, 'contrast_first': draws[4] < 0.5,
                'saturation': 0.5 + draws[6] if draws[5] < 0.5 else 1.0,
                'hue': int(draws[8] * 37) - 18 if draws[7] < 0.5 else 0}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        rgb = inpt.permute(1, 2, 0).numpy().astype(np.float32) + params['brightness']
        if params['contrast_first']:
            rgb *= params['contrast']
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        if params['saturation'] != 1.0 or params['hue']:
            hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int16)
            hsv[..., 1] = np.clip(hsv[..., 1] * params['saturation'], 0, 255)
            hsv[..., 0] = (hsv[..., 0] + params['hue']) % 180
            rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
        if not params['contrast_first'] and params['contrast'] != 1.0:
            rgb = np.clip(rgb.astype(np.float32) * params['contrast'], 0, 255).astype(np.uint8)
        return tv_tensors.wrap(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1), like=inpt)


@dataclass(frozen=True)
class SemanticPipeline:
    """Scale and flip once, then a crop (redrawn while one class dominates it), then colour."""

    geometric: v2.Compose
    crop: v2.RandomCrop
    photometric: Optional[PhotometricDistortion]
    max_class_ratio: float


def semantic_pipeline(recipe: Recipe, base_size: tuple[int, int], crop_size: tuple[int, int]) -> SemanticPipeline:
    return SemanticPipeline(v2.Compose(_scale_and_flip(recipe, base_size)),
                            v2.RandomCrop(crop_size, pad_if_needed=True,
                                          fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}),
                            PhotometricDistortion() if recipe.photometric else None, recipe.crop_max_class_ratio)


def instance_pipeline(recipe: Recipe, base_size: tuple[int, int]) -> v2.Compose:
    steps = _scale_and_flip(recipe, base_size)
    if recipe.photometric:
        steps.append(PhotometricDistortion())
    steps.append(v2.SanitizeBoundingBoxes(min_size=2))
    return v2.Compose(steps)


def augment_semantic(pipeline: SemanticPipeline, rgb: np.ndarray, target: np.ndarray, seed: int,
                     attempts: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (3, h, w) image, int64 (h, w) target) of one sample, drawn with ``seed``; a crop in
    which one class covers more than the pipeline's ``max_class_ratio`` of the labelled pixels is
    drawn again (mmseg's cat_max_ratio), up to ``attempts`` times."""
    image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
    mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(target)))
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        image, mask = pipeline.geometric(image, mask)
        for _ in range(attempts):
            out_image, out_mask = pipeline.crop(image, mask)
            counts = torch.bincount(out_mask[out_mask != IGNORE].flatten().long())
            if pipeline.max_class_ratio >= 1.0 or counts.numel() < 2 or \
                    counts.max() <= pipeline.max_class_ratio * counts.sum():
                break
        if pipeline.photometric is not None:
            out_image = pipeline.photometric(out_image)
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
