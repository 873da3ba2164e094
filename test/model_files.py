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


def torchvision_v1_coco_model(seed: int):
    """Mask R-CNN as torchvision's builder makes it for its COCO_V1 weights: a ResNet-50 with
    FrozenBatchNorm2d, then ``overwrite_eps(model, 0.0)``; batch-norm variances near epsilon, so that
    running with 1e-5 instead of 0.0 shows."""
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(seed)
    model = MaskRCNN(_resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3), num_classes=91,
                     box_detections_per_img=20)
    overwrite_eps(model, 0.0)
    generator = torch.Generator().manual_seed(seed)
    for layer in model.modules():
        if isinstance(layer, FrozenBatchNorm2d):
            variance = torch.rand(layer.running_var.shape, generator=generator) * 4e-5 + 1e-5
            layer.running_var.copy_(variance)
            layer.weight.copy_(variance.sqrt() * (torch.rand(variance.shape, generator=generator) + 0.5))
    return model
