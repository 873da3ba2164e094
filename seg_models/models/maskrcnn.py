"""Mask R-CNN from torchvision (``maskrcnn_resnet50_fpn`` and ``_v2``), built without downloads.

The network's class index 0 is background; index k > 0 is the k-th entry of ``network_classes``,
a list of names that maps the network's outputs onto a label set (placeholders included, as in
torchvision's 91-entry COCO list).
"""
from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.ops.misc import FrozenBatchNorm2d

from seg_models.data.labels import BACKGROUND, LabelSet, coco_category_names

MASK_RCNN_BUILDERS: dict[str, Callable[..., MaskRCNN]] = {
    'maskrcnn_resnet50_fpn': torchvision.models.detection.maskrcnn_resnet50_fpn,
    'maskrcnn_resnet50_fpn_v2': torchvision.models.detection.maskrcnn_resnet50_fpn_v2,
}
MASK_RCNN_ARCHITECTURES = tuple(MASK_RCNN_BUILDERS)


def network_classes_for(label_set: LabelSet) -> list[str]:
    """Names of the network's class indices for a model trained on ``label_set``.

    COCO models keep torchvision's 91 indices (with 'N/A' gaps) so COCO checkpoints load unchanged;
    other label sets use background + their classes in id order.
    """
    if label_set.name == 'coco_things':
        return coco_category_names()
    return [BACKGROUND] + label_set.names


def mask_rcnn(architecture: str, num_network_classes: int, max_detections: int = 100,
              score_threshold: float = 0.05) -> MaskRCNN:
    """Mask R-CNN with random weights; ``num_network_classes`` counts the background class."""
    if architecture not in MASK_RCNN_BUILDERS:
        raise ValueError(f'unknown Mask R-CNN architecture {architecture!r}; '
                         f'known: {", ".join(MASK_RCNN_ARCHITECTURES)}')
    return MASK_RCNN_BUILDERS[architecture](
        weights=None, weights_backbone=None, num_classes=num_network_classes,
        box_detections_per_img=max_detections, box_score_thresh=score_threshold)


def freeze_batch_norm(module: nn.Module, eps: float) -> None:
    """Replace the BatchNorm2d layers inside ``module`` with FrozenBatchNorm2d(``eps``), the layers
    torchvision's pretrained detection backbones are built and saved with."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=eps))
        else:
            freeze_batch_norm(child, eps)
