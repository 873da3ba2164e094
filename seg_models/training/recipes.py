"""Training recipes: the published hyper-parameters each task trains with, and where they come from.

Semantic: mmsegmentation's DeepLabV3+ on Cityscapes (configs/deeplabv3plus/
deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py with configs/_base_/schedules/schedule_40k.py
and datasets/cityscapes.py): SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly schedule power 0.9
down to 1e-4, random resize 0.5-2.0 of the base scale, random crop (at most 75% one class),
horizontal flip 0.5, photometric distortion.
Instance: torchvision's detection references (references/detection/train.py, Mask R-CNN): SGD lr
0.02 for 16 images (scaled linearly with the batch), momentum 0.9, weight decay 1e-4, linear
warm-up over the first 1000 iterations from 0.001x, lr x0.1 at 16/26 and 22/26 of the schedule,
multi-scale training (the shorter side drawn from a range), horizontal flip 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Optimiser, schedule and augmentation of one training run (iterations count optimiser steps)."""

    learning_rate: float
    momentum: float
    weight_decay: float
    schedule: str  # poly or multistep
    poly_power: float = 0.9
    min_learning_rate: float = 0.0
    warmup_iterations: int = 0
    warmup_factor: float = 1.0
    milestones: tuple[float, ...] = ()  # fractions of the run where the multistep schedule divides by 10
    scale_range: tuple[float, float] = (1.0, 1.0)  # random resize of the base size
    flip: float = 0.5
    photometric: bool = False
    crop_max_class_ratio: float = 1.0  # mmseg's cat_max_ratio: a crop is redrawn while one class fills more

    def learning_rate_factor(self, iteration: int, total: int) -> float:
        """The learning rate at ``iteration`` of ``total`` as a factor of ``learning_rate``."""
        if self.schedule == 'poly':
            floor = self.min_learning_rate / self.learning_rate
            return (1 - floor) * (1 - min(iteration, total) / total) ** self.poly_power + floor
        factor = 0.1 ** sum(iteration >= fraction * total for fraction in self.milestones)
        if iteration < self.warmup_iterations:
            alpha = iteration / self.warmup_iterations
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


SEMANTIC_RECIPE = Recipe(learning_rate=0.01, momentum=0.9, weight_decay=5e-4, schedule='poly', poly_power=0.9,
                         min_learning_rate=1e-4, scale_range=(0.5, 2.0), flip=0.5, photometric=True,
                         crop_max_class_ratio=0.75)
INSTANCE_RECIPE = Recipe(learning_rate=0.02 / 16, momentum=0.9, weight_decay=1e-4, schedule='multistep',
                         warmup_iterations=1000, warmup_factor=0.001, milestones=(16 / 26, 22 / 26),
                         scale_range=(0.8, 1.2), flip=0.5)  # learning_rate is per image of the global batch
RECIPES = {'semantic': SEMANTIC_RECIPE, 'instance': INSTANCE_RECIPE}
