"""Encoders for DeepLabv3+: torchvision backbones that return a stride-4 and a deep feature map.

Weights are never downloaded: backbones start random and receive weights from checkpoints.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter


@dataclass(frozen=True)
class EncoderFeatures:
    """What the decoder needs to know about an encoder's two outputs."""

    low_level_channels: int  # channels of the stride-4 map ('low')
    out_channels: int  # channels of the deepest map ('out'), at the output stride


def _dilation_pattern(output_stride: int) -> list[bool]:
    # ResNet stages 2..4 trade stride for dilation: OS16 dilates the last, OS8 the last two.
    patterns = {16: [False, False, True], 8: [False, True, True]}
    if output_stride not in patterns:
        raise ValueError(f'output stride must be 8 or 16, got {output_stride}')
    return patterns[output_stride]


def _deep_stem(stem_channels: int = 64) -> nn.Sequential:
    """ResNet-C stem (Bag of Tricks; mmseg's ResNetV1c): three 3x3 convs instead of one 7x7."""
    half = stem_channels // 2
    layers = []
    for in_channels, out_channels, stride in ((3, half, 2), (half, half, 1), (half, stem_channels, 1)):
        layers += [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def resnet_encoder(depth: int, output_stride: int, deep_stem: bool = False) -> tuple[nn.Module, EncoderFeatures]:
    """ResNet-50/101 with atrous convolutions; 'low' = layer1 (stride 4), 'out' = layer4.

    ``deep_stem`` swaps the 7x7 stem for the ResNet-C stem under the name ``stem``.
    """
    constructors = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
    if depth not in constructors:
        raise ValueError(f'ResNet depth must be 50 or 101, got {depth}')
    resnet = constructors[depth](weights=None, replace_stride_with_dilation=_dilation_pattern(output_stride))
    if deep_stem:
        resnet = nn.Sequential(OrderedDict(
            [('stem', _deep_stem()), ('maxpool', resnet.maxpool)]
            + [(name, getattr(resnet, name)) for name in ('layer1', 'layer2', 'layer3', 'layer4')]))
    encoder = IntermediateLayerGetter(resnet, return_layers={'layer1': 'low', 'layer4': 'out'})
    return encoder, EncoderFeatures(low_level_channels=256, out_channels=2048)


def mobilenet_v3_large_encoder(output_stride: int, deep_stem: bool = False) -> tuple[nn.Module, EncoderFeatures]:
    """MobileNetV3-Large with its last stage dilated (output stride 16 only).

    'low' is the last block at stride 4 (24 channels), 'out' the final 960-channel conv.
    """
    if deep_stem:
        raise ValueError('a deep (ResNet-C) stem exists for ResNet encoders only')
    if output_stride != 16:
        raise ValueError('MobileNetV3-Large supports output stride 16 only (torchvision dilates one stage)')
    features = torchvision.models.mobilenet_v3_large(weights=None, dilated=True).features
    stage_starts = [index for index, block in enumerate(features) if getattr(block, '_is_cn', False)]
    last_stride4_block = stage_starts[1] - 1  # the block just before the stride-8 stage starts
    encoder = IntermediateLayerGetter(
        features, return_layers={str(last_stride4_block): 'low', str(len(features) - 1): 'out'})
    return encoder, EncoderFeatures(
        low_level_channels=features[last_stride4_block].out_channels,
        out_channels=features[-1].out_channels)


#: encoder name -> builder(output_stride, deep_stem) returning (encoder, its features)
BACKBONES: dict[str, Callable[..., tuple[nn.Module, EncoderFeatures]]] = {
    'resnet50': partial(resnet_encoder, 50),
    'resnet101': partial(resnet_encoder, 101),
    'mobilenet_v3_large': mobilenet_v3_large_encoder,
}
