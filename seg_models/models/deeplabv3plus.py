"""DeepLabv3+ (Chen et al., 2018): atrous encoder + ASPP + a light decoder on stride-4 features.

Layout follows torchvision: the backbone returns named feature maps, the head turns them into
logits, the model only wires the two and restores the input resolution.

Four head layouts exist because the public checkpoints people have differ in structure, not
only in key names (``HEAD_LAYOUTS``):

- ``paper``: torchvision's ASPP, 48-channel projection, two 3x3 convs of 256 (the paper's decoder);
- ``separable``: the paper's depthwise-separable atrous branches and decoder convs (as its Xception
  model has them), 256 channels, a 1x1 ASPP projection: a fifth of the paper head's weights and far
  fewer operations at stride 4, for small encoders (the shipped demo model, 9 MB in fp16);
- ``vainf``: VainF/DeepLabV3Plus-Pytorch: the same ASPP, one 3x3 conv of 256 in the decoder;
- ``mmseg``: mmsegmentation's DepthwiseSeparableASPPHead on a ResNetV1c (deep-stem) encoder:
  separable atrous branches, a 3x3 ASPP bottleneck, two separable 3x3 decoder convs, 512 channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from seg_models.models.backbones import BACKBONES, EncoderFeatures

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def separable_conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (atrous) conv then pointwise 1x1 conv, each with BN and ReLU."""
    return nn.Sequential(conv_bn_relu(in_channels, in_channels, 3, dilation, groups=in_channels),
                         conv_bn_relu(in_channels, out_channels, 1))


class SeparableASPP(nn.Module):
    """ASPP with depthwise-separable atrous branches (mmsegmentation's variant): image pooling,
    a 1x1 branch and one separable branch per rate, fused by a 3x3 conv."""

    def __init__(self, in_channels: int, atrous_rates: tuple[int, ...], channels: int, project_kernel: int = 3) -> None:
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, channels, 1))
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, 1)] + [separable_conv(in_channels, channels, rate)
                                                        for rate in atrous_rates])
        self.project = conv_bn_relu(channels * (len(atrous_rates) + 2), channels, project_kernel)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(features), size=features.shape[-2:], mode='bilinear',
                               align_corners=False)
        return self.project(torch.cat([pooled] + [branch(features) for branch in self.branches], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """Context module (ASPP) on the deep features, then the decoder: low-level projection,
    concatenation [upsampled context, projected low-level], fuse convs and a 1x1 classifier."""

    def __init__(self, aspp: nn.Module, low_level_projection: nn.Module, fuse: nn.Module,
                 classifier: nn.Module) -> None:
        super().__init__()
        self.aspp = aspp
        self.low_level_projection = low_level_projection
        self.fuse = fuse
        self.classifier = classifier

    def forward(self, low_level: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        low_level = self.low_level_projection(low_level)
        context = F.interpolate(self.aspp(deep), size=low_level.shape[-2:], mode='bilinear', align_corners=False)
        return self.classifier(self.fuse(torch.cat([context, low_level], dim=1)))


LOW_LEVEL_CHANNELS = 48  # the decoder's projection of the stride-4 features, in every layout


def _head(features: EncoderFeatures, context: Callable[[], nn.Module], fuse: Callable[[], list[nn.Module]],
          channels: int, num_classes: int) -> DeepLabV3PlusHead:
    # Modules are created in this order (projection, fuse, context, classifier) so untrained
    # weights from a fixed seed stay what they were.
    projection = conv_bn_relu(features.low_level_channels, LOW_LEVEL_CHANNELS, 1)
    fuse_layers = nn.Sequential(*fuse())
    return DeepLabV3PlusHead(context(), projection, fuse_layers, nn.Conv2d(channels, num_classes, 1))


def paper_head(features: EncoderFeatures, num_classes: int, atrous_rates: tuple[int, ...]) -> DeepLabV3PlusHead:
    """torchvision's ASPP, a 48-channel projection, two 3x3 convs of 256: the paper's decoder."""
    return _head(features, lambda: ASPP(features.out_channels, atrous_rates, 256),
                 lambda: [conv_bn_relu(256 + LOW_LEVEL_CHANNELS, 256, 3), conv_bn_relu(256, 256, 3)], 256, num_classes)


def vainf_head(features: EncoderFeatures, num_classes: int, atrous_rates: tuple[int, ...]) -> DeepLabV3PlusHead:
    """VainF/DeepLabV3Plus-Pytorch: the paper's head with one 3x3 conv in the decoder."""
    return _head(features, lambda: ASPP(features.out_channels, atrous_rates, 256),
                 lambda: [conv_bn_relu(256 + LOW_LEVEL_CHANNELS, 256, 3)], 256, num_classes)


def separable_head(features: EncoderFeatures, num_classes: int, atrous_rates: tuple[int, ...]) -> DeepLabV3PlusHead:
    """The paper's separable ASPP branches and decoder convs at 256 channels, a 1x1 ASPP projection."""
    return _head(features, lambda: SeparableASPP(features.out_channels, atrous_rates, 256, project_kernel=1),
                 lambda: [separable_conv(256 + LOW_LEVEL_CHANNELS, 256), separable_conv(256, 256)], 256, num_classes)


def mmseg_head(features: EncoderFeatures, num_classes: int, atrous_rates: tuple[int, ...]) -> DeepLabV3PlusHead:
    """mmsegmentation's DepthwiseSeparableASPPHead: separable ASPP and decoder convs of 512 channels."""
    return _head(features, lambda: SeparableASPP(features.out_channels, atrous_rates, 512),
                 lambda: [separable_conv(512 + LOW_LEVEL_CHANNELS, 512), separable_conv(512, 512)], 512, num_classes)


@dataclass(frozen=True)
class HeadLayout:
    """A head builder and the encoder stem its checkpoints were trained with."""

    build: Callable[[EncoderFeatures, int, tuple[int, ...]], DeepLabV3PlusHead]
    deep_stem: bool = False  # mmseg's ResNetV1c: the ResNet-C stem


#: head layout name -> how to build it (checkpoint formats name one of these)
HEAD_LAYOUTS: dict[str, HeadLayout] = {
    'paper': HeadLayout(paper_head),
    'separable': HeadLayout(separable_head),
    'vainf': HeadLayout(vainf_head),
    'mmseg': HeadLayout(mmseg_head, deep_stem=True),
}


class DeepLabV3Plus(nn.Module):
    """Normalised image batch (N, 3, H, W) -> logits (N, num_classes, H, W)."""

    def __init__(self, backbone: nn.Module, head: DeepLabV3PlusHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, output_size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Logits at ``output_size`` (default: the input's): the head's quarter-resolution logits
        upsampled bilinearly once, straight to a camera's size where it differs from the input."""
        return F.interpolate(self.head_logits(images), size=tuple(output_size or images.shape[-2:]), mode='bilinear',
                             align_corners=False)

    def head_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The head's own logits, at a quarter of the input's resolution."""
        features = self.backbone(images)
        return self.head(features['low'], features['out'])


def deeplabv3plus(backbone: str, num_classes: int, output_stride: int = 16, layout: str = 'paper') -> DeepLabV3Plus:
    """DeepLabv3+ with random weights on ``backbone`` (a key of BACKBONES) at ``output_stride``,
    head in ``layout`` (a key of HEAD_LAYOUTS)."""
    if backbone not in BACKBONES:
        raise ValueError(f'unknown DeepLabv3+ backbone {backbone!r}; known: {", ".join(BACKBONES)}')
    if layout not in HEAD_LAYOUTS:
        raise ValueError(f'unknown DeepLabv3+ head layout {layout!r}; known: {", ".join(HEAD_LAYOUTS)}')
    head_layout = HEAD_LAYOUTS[layout]
    encoder, features = BACKBONES[backbone](output_stride, deep_stem=head_layout.deep_stem)
    return DeepLabV3Plus(encoder, head_layout.build(features, num_classes, ASPP_RATES[output_stride]))


#: architecture name (the nodes' ``architecture`` parameter) -> builder(num_classes, output_stride, layout)
DEEPLABV3PLUS_ARCHITECTURES: dict[str, Callable[..., DeepLabV3Plus]] = {
    f'deeplabv3plus_{backbone}': partial(deeplabv3plus, backbone) for backbone in BACKBONES}
