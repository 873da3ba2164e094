"""Importing the public DeepLabv3+ checkpoint formats into this package's network layout.

Each format is recognised from its keys, fixes the head layout the network must be built with
(see ``models.deeplabv3plus.HEAD_LAYOUTS``) and is renamed key by key. Keys that only training
used (mmseg's auxiliary head) are dropped by name and logged; anything else that does not fit is
left for ``load_state_dict_strict`` to report.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from seg_models.checkpoints.reading import CheckpointError
from seg_models.models.deeplabv3plus import LOW_LEVEL_CHANNELS

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    head_layout: str
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _native(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state_dict


def _from_vainf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VainF/DeepLabV3Plus-Pytorch: ``classifier.{aspp,project,classifier}``; its decoder concatenates
    [low-level, context], ours [context, low-level], so the first fuse conv's input channels swap."""
    renames = (('classifier.aspp.', 'head.aspp.'), ('classifier.project.', 'head.low_level_projection.'),
               ('classifier.classifier.0.', 'head.fuse.0.0.'), ('classifier.classifier.1.', 'head.fuse.0.1.'),
               ('classifier.classifier.3.', 'head.classifier.'))
    converted = {}
    for key, tensor in state_dict.items():
        if key.startswith('backbone.low_level_features') or key.startswith('backbone.high_level_features'):
            raise CheckpointError('VainF MobileNetV2 checkpoints are not supported (its MobileNetV2 encoder is '
                                  'not torchvision\'s); use a ResNet-50/101 checkpoint')
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        converted[key] = tensor
    weight = converted.get('head.fuse.0.0.weight')
    if weight is not None:
        converted['head.fuse.0.0.weight'] = torch.cat(
            [weight[:, LOW_LEVEL_CHANNELS:], weight[:, :LOW_LEVEL_CHANNELS]], dim=1)
    return converted


_MMSEG_MODULES = (('decode_head.image_pool.', 'head.aspp.image_pool.'),
                  ('decode_head.aspp_modules.', 'head.aspp.branches.'),
                  ('decode_head.bottleneck.', 'head.aspp.project.'),
                  ('decode_head.c1_bottleneck.', 'head.low_level_projection.'),
                  ('decode_head.sep_bottleneck.', 'head.fuse.'),
                  ('decode_head.conv_seg.', 'head.classifier.'))
# mmcv's ConvModule is (conv, bn, act) and DepthwiseSeparableConvModule (depthwise, pointwise);
# ours are Sequentials, so the names become positions.
_MMCV_PARTS = (('.depthwise_conv.', '.0.'), ('.pointwise_conv.', '.1.'), ('.conv.', '.0.'), ('.bn.', '.1.'))
_MMSEG_TRAINING_ONLY = ('auxiliary_head.',)


def _from_mmseg(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmsegmentation DepthwiseSeparableASPPHead + ResNetV1c (``backbone.`` / ``decode_head.``)."""
    converted, dropped = {}, []
    for key, tensor in state_dict.items():
        if key.startswith(_MMSEG_TRAINING_ONLY):
            dropped.append(key)
            continue
        for old, new in _MMSEG_MODULES:
            if key.startswith(old):
                key = new + key[len(old):]
                if new != 'head.classifier.':
                    for part, position in _MMCV_PARTS:
                        key = key.replace(part, position)
                break
        converted[key] = tensor
    if dropped:
        LOGGER.info('mmseg checkpoint: dropped %d training-only keys (%s)', len(dropped),
                    ', '.join(sorted({key.split('.')[0] for key in dropped})))
    return converted


# mmseg's ResNetV1c settings for its DeepLabV3+ files: the keys are the same, the strides and
# dilations are not; its config text (saved in the checkpoint's meta) or file name says which.
_MMSEG_OUTPUT_STRIDES = {'(1, 2, 1, 1)': 8, '(1, 2, 2, 1)': 16}


def mmseg_settings(meta: Mapping, file_name: str) -> tuple[dict, str]:
    """(settings an mmseg checkpoint fixes, where they were read) from its saved config text
    (``meta['config']`` in mmseg 0.x files, ``meta['cfg']`` in 1.x) or, failing that, its file name
    (``-d8_``, ``-d16-mg124_``). A multi-grid encoder (``mg124``) is refused: this network has none."""
    config = meta.get('cfg') or meta.get('config') or ''
    if isinstance(config, str) and 'backbone' in config:
        grid = re.search(r'multi_grid\s*=\s*\(([^)]*)\)', config)
        strides = re.search(r'strides\s*=\s*(\([^)]*\))', config)
        if grid:
            raise CheckpointError(f'mmseg checkpoint {file_name} uses a multi-grid encoder (multi_grid=({grid[1]}), '
                                  f'its config says), which this network does not build')
        if strides and strides[1] in _MMSEG_OUTPUT_STRIDES:
            return {'output_stride': _MMSEG_OUTPUT_STRIDES[strides[1]]}, 'its saved mmseg config'
    if re.search(r'-d16-mg\d+', file_name):
        raise CheckpointError(f'mmseg checkpoint {file_name} uses a multi-grid encoder (its name says -mg), which '
                              f'this network does not build')
    stride = re.search(r'-d(8|16)[_-]', file_name)
    if stride:
        return {'output_stride': int(stride[1])}, 'its mmseg file name'
    return {}, ''


FORMATS = {
    'seg_models': CheckpointFormat('seg_models', 'paper', _native),
    'seg_models_separable': CheckpointFormat('seg_models', 'separable', _native),
    'vainf': CheckpointFormat('vainf', 'vainf', _from_vainf),
    'mmseg': CheckpointFormat('mmseg', 'mmseg', _from_mmseg),
}


def strip_wrapper_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that (Distributed)DataParallel training adds to every key."""
    if state_dict and all(key.startswith('module.') for key in state_dict):
        return {key[len('module.'):]: tensor for key, tensor in state_dict.items()}
    return state_dict


def detect_format(state_dict: dict[str, torch.Tensor]) -> CheckpointFormat:
    """Which public format ``state_dict`` is in, from its key layout."""
    keys = list(state_dict)
    if any(key.startswith('decode_head.') for key in keys):
        return FORMATS['mmseg']
    if any(re.match(r'classifier\.(aspp|project|classifier)\.', key) for key in keys):
        return FORMATS['vainf']
    if any(key.startswith('head.aspp.branches.') for key in keys):  # ours, with separable ASPP branches
        return FORMATS['seg_models_separable']
    return FORMATS['seg_models']


def import_deeplabv3plus(state_dict: dict[str, torch.Tensor]) -> tuple[CheckpointFormat, dict[str, torch.Tensor]]:
    """(format, state dict renamed to this package's layout for ``format.head_layout``)."""
    state_dict = strip_wrapper_prefix(state_dict)
    checkpoint_format = detect_format(state_dict)
    return checkpoint_format, checkpoint_format.convert(state_dict)


# torchvision's Mask R-CNN v1 COCO weights (and any model built from them) come from a ResNet with
# FrozenBatchNorm2d, which has no num_batches_tracked, and torchvision runs them with BatchNorm
# epsilon 0.0 (``overwrite_eps`` in its model builder), not 1e-5.
TORCHVISION_V1_FROZEN_BATCH_NORM_EPS = 0.0


def frozen_batch_norm_eps(architecture: str, state_dict: dict[str, torch.Tensor]) -> float | None:
    """The epsilon of the FrozenBatchNorm2d a torchvision Mask R-CNN checkpoint's backbone must run
    with, None where it was saved from (trainable) BatchNorm2d."""
    backbone = [key for key in state_dict if key.startswith('backbone.body.')]
    frozen = backbone and not any(key.endswith('num_batches_tracked') for key in backbone)
    if architecture == 'maskrcnn_resnet50_fpn' and frozen:
        return TORCHVISION_V1_FROZEN_BATCH_NORM_EPS
    return None
