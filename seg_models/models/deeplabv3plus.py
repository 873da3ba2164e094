"""DeepLabv3+ (Chen et al., 2018): atrous encoder + ASPP + a light decoder on stride-4 features.

Layout follows torchvision: the backbone returns named feature maps, the head turns them into
logits, the model only wires the two and restores the input resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from seg_models.models.backbones import EncoderFeatures, mobilenet_v3_large_encoder, resnet_encoder

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the deep features, then the decoder: 48-channel low-level projection, concatenation
    with the upsampled ASPP output, two 3x3 convs of 256 channels and a 1x1 classifier."""

    def __init__(self, features: EncoderFeatures, num_classes: int, atrous_rates: tuple[int, int, int],
                 aspp_channels: int = 256, low_level_projection_channels: int = 48,
                 decoder_channels: int = 256) -> None:
        super().__init__()
        self.aspp = ASPP(features.out_channels, atrous_rates, aspp_channels)
        self.low_level_projection = _conv_bn_relu(features.low_level_channels, low_level_projection_channels, 1)
        self.fuse = nn.Sequential(
            _conv_bn_relu(aspp_channels + low_level_projection_channels, decoder_channels, 3),
            _conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, low_level: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        low_level = self.low_level_projection(low_level)
        context = F.interpolate(self.aspp(deep), size=low_level.shape[-2:], mode='bilinear', align_corners=False)
        return self.classifier(self.fuse(torch.cat([context, low_level], dim=1)))


class DeepLabV3Plus(nn.Module):
    """Normalised image batch (N, 3, H, W) -> logits (N, num_classes, H, W)."""

    def __init__(self, backbone: nn.Module, head: DeepLabV3PlusHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        logits = self.head(features['low'], features['out'])
        return F.interpolate(logits, size=images.shape[-2:], mode='bilinear', align_corners=False)


BACKBONES = ('resnet50', 'resnet101', 'mobilenet_v3_large')


def deeplabv3plus(backbone: str, num_classes: int, output_stride: int = 16) -> DeepLabV3Plus:
    """DeepLabv3+ with random weights on ``backbone`` (one of BACKBONES) at ``output_stride``."""
    if backbone == 'mobilenet_v3_large':
        encoder, features = mobilenet_v3_large_encoder(output_stride)
    elif backbone in ('resnet50', 'resnet101'):
        encoder, features = resnet_encoder(int(backbone[len('resnet'):]), output_stride)
    else:
        raise ValueError(f'unknown DeepLabv3+ backbone {backbone!r}; known: {", ".join(BACKBONES)}')
    return DeepLabV3Plus(encoder, DeepLabV3PlusHead(features, num_classes, ASPP_RATES[output_stride]))
