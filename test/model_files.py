"""Model files the tests hand to segmenters and nodes, as a user would: checkpoints with random
weights from a fixed seed. conftest.py makes one of each kind per test run (its session fixtures);
ROS-free, so GPU-only test runs can import it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def random_checkpoint(path: Path, build: Callable, seed: int) -> Path:
    """Save the state dict of ``build()`` (random weights from ``seed``) as a user's checkpoint file."""
    import torch

    torch.manual_seed(seed)
    torch.save(build().state_dict(), path)
    return path


def deeplabv3plus_checkpoint(path: Path, backbone: str, seed: int) -> Path:
    """DeepLabv3+ on ``backbone`` with Cityscapes' 19 classes, in torchvision layout."""
    from seg_models.models.deeplabv3plus import deeplabv3plus

    return random_checkpoint(path, lambda: deeplabv3plus(backbone, num_classes=19), seed)


def maskrcnn_checkpoint(path: Path, seed: int) -> Path:
    """Mask R-CNN R50-FPN with cityscapes_things' 8 classes (9 with the background), in torchvision layout."""
    from seg_models.models.maskrcnn import mask_rcnn

    return random_checkpoint(path, lambda: mask_rcnn('maskrcnn_resnet50_fpn', 9), seed)
