"""Public DeepLabv3+ checkpoint formats import into our network and reproduce the source network.

Each source network below is written independently in its project's own module structure
(VainF/DeepLabV3Plus-Pytorch, mmsegmentation's DepthwiseSeparableASPPHead on ResNetV1c), so
its state dict has the real key layout; random weights, saved in the project's real container.
"""
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP

from seg_models.checkpoints.reading import CheckpointError, read_state_dict
from seg_models.data.labels import cityscapes
from seg_models.checkpoints.model_card import resolved_semantic_config
from seg_models.segmenters.semantic import SemanticModelConfig, build_semantic_network


def randomise_batch_norm(module: nn.Module) -> None:
    """Non-trivial running statistics, so a BN loaded into the wrong place shows in the outputs."""
    generator = torch.Generator().manual_seed(11)
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)


class VainFHead(nn.Module):
    """VainF's DeepLabHeadV3Plus: classifier(cat[low-level, context])."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(256, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.aspp = ASPP(2048, [6, 12, 18])  # VainF's ASPP has torchvision's structure and names
        self.classifier = nn.Sequential(nn.Conv2d(304, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                        nn.ReLU(inplace=True), nn.Conv2d(256, num_classes, 1))

    def forward(self, features):
        low = self.project(features['low_level'])
        context = F.interpolate(self.aspp(features['out']), size=low.shape[2:], mode='bilinear', align_corners=False)
        return self.classifier(torch.cat([low, context], dim=1))


class VainFDeepLabV3Plus(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
        self.backbone = IntermediateLayerGetter(resnet, return_layers={'layer4': 'out', 'layer1': 'low_level'})
        self.classifier = VainFHead(num_classes)

    def forward(self, images):
        return F.interpolate(self.classifier(self.backbone(images)), size=images.shape[2:], mode='bilinear',
                             align_corners=False)


class ConvModule(nn.Module):
    """mmcv's ConvModule: conv (no bias before BN), bn, activate."""

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                              dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    def __init__(self, in_channels, out_channels, dilation=1):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, 3, dilation, groups=in_channels)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class MMSegHead(nn.Module):
    """mmseg's DepthwiseSeparableASPPHead (channels 512, c1 48, dilations 1/12/24/36)."""

    def __init__(self, num_classes, channels=512):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(2048, channels, 1))
        self.aspp_modules = nn.ModuleList([ConvModule(2048, channels, 1)] + [
            DepthwiseSeparableConvModule(2048, channels, dilation) for dilation in (12, 24, 36)])
        self.bottleneck = ConvModule(5 * channels, channels, 3)
        self.c1_bottleneck = ConvModule(256, 48, 1)
        self.sep_bottleneck = nn.Sequential(DepthwiseSeparableConvModule(channels + 48, channels),
                                            DepthwiseSeparableConvModule(channels, channels))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs):
        x = inputs[3]
        pooled = F.interpolate(self.image_pool(x), size=x.shape[2:], mode='bilinear', align_corners=False)
        output = self.bottleneck(torch.cat([pooled] + [module(x) for module in self.aspp_modules], dim=1))
        c1 = self.c1_bottleneck(inputs[0])
        output = F.interpolate(output, size=c1.shape[2:], mode='bilinear', align_corners=False)
        return self.conv_seg(self.sep_bottleneck(torch.cat([output, c1], dim=1)))


class MMSegResNetV1c(nn.Module):
    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.maxpool = resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs


class MMSegEncoderDecoder(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = MMSegResNetV1c()
        self.decode_head = MMSegHead(num_classes)
        self.auxiliary_head = nn.Sequential(ConvModule(1024, 256, 3), nn.Conv2d(256, num_classes, 1))

    def forward(self, images):
        return F.interpolate(self.decode_head(self.backbone(images)), size=images.shape[2:], mode='bilinear',
                             align_corners=False)


class HistoryBuffer:
    """Pickles as mmengine's ``mmengine.logging.history_buffer.HistoryBuffer`` does (class + instance
    dict with numpy arrays); mmengine itself is not installed here."""

    def __init__(self, values) -> None:
        self._log_history = np.array(values)
        self._count_history = np.ones(len(values))
        self.max_length = 1000000


HistoryBuffer.__module__, HistoryBuffer.__qualname__ = 'mmengine.logging.history_buffer', 'HistoryBuffer'
for _name in ('mmengine', 'mmengine.logging', 'mmengine.logging.history_buffer'):  # for pickle's lookup
    sys.modules.setdefault(_name, types.ModuleType(_name))
sys.modules['mmengine.logging.history_buffer'].HistoryBuffer = HistoryBuffer


def normalised_input():
    return torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))


def assert_same_outputs(source: nn.Module, checkpoint, output_stride: int | None):
    """``output_stride`` None: left unset, to be taken from the checkpoint."""
    config = SemanticModelConfig(architecture='deeplabv3plus_resnet50', checkpoint=str(checkpoint),
                                 **({} if output_stride is None else {'output_stride': output_stride}))
    network, _ = build_semantic_network(resolved_semantic_config(config), cityscapes())
    images = normalised_input()
    with torch.no_grad():
        expected, actual = source.eval()(images), network.eval()(images)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert np.mean((actual.argmax(1) == expected.argmax(1)).numpy()) == 1.0


def test_vainf_checkpoint_reproduces_the_vainf_network(tmp_path):
    torch.manual_seed(0)
    source = VainFDeepLabV3Plus(19)
    randomise_batch_norm(source)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.01, momentum=0.9)
    path = tmp_path / 'best_deeplabv3plus_resnet50_cityscapes_os16.pth'
    # as VainF's main.py saves it: best_score is the numpy float its metrics return
    torch.save({'cur_itrs': 30000, 'model_state': source.state_dict(), 'optimizer_state': optimizer.state_dict(),
                'scheduler_state': {'last_epoch': 30000}, 'best_score': np.float64(0.7645)}, path)
    assert_same_outputs(source, path, output_stride=16)


def test_vainf_checkpoint_saved_from_data_parallel_loads(tmp_path):
    torch.manual_seed(1)
    source = VainFDeepLabV3Plus(19)
    path = tmp_path / 'data_parallel.pth'
    torch.save({'model_state': {f'module.{key}': value for key, value in source.state_dict().items()}}, path)
    assert_same_outputs(source, path, output_stride=16)


def test_mmseg_checkpoint_reproduces_the_mmseg_network(tmp_path, caplog):
    torch.manual_seed(0)
    source = MMSegEncoderDecoder(19)
    randomise_batch_norm(source)
    path = tmp_path / 'deeplabv3plus_r50-d8_512x1024_80k_cityscapes.pth'
    # as mmengine's runner writes it during training: its config text, a message_hub of its own classes
    torch.save({'meta': {'mmseg_version': '1.2.2', 'dataset_meta': {'classes': tuple(cityscapes().names)},
                         'seed': np.int64(0), 'epoch': 0, 'iter': 80000, 'cfg': mmseg_config_text(d8=True)},
                'state_dict': source.state_dict(),
                'message_hub': {'log_scalars': {'train/loss': HistoryBuffer([0.3, 0.2])}, 'runtime_info': {
                    'iter': 80000}, 'resumed_keys': {'iter': True}}}, path)
    caplog.set_level('INFO')
    assert_same_outputs(source, path, output_stride=None)  # output stride 8 taken from the saved config
    assert 'output_stride 8 (its saved mmseg config)' in caplog.text
    assert 'mmseg checkpoint: dropped' in caplog.text and 'auxiliary_head' in caplog.text
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in caplog.text and 'inert placeholders' in caplog.text


def mmseg_config_text(d8: bool) -> str:
    """The model part of mmseg's config as ``Config.pretty_text`` writes it: -d8 or -d16-mg124."""
    settings = ('dilations=(1, 1, 2, 4),\n        strides=(1, 2, 1, 1),' if d8 else
                'dilations=(1, 1, 1, 2),\n        strides=(1, 2, 2, 1),\n        multi_grid=(1, 2, 4),')
    return (f"norm_cfg = dict(type='SyncBN', requires_grad=True)\nmodel = dict(\n    type='EncoderDecoder',\n"
            f"    pretrained='open-mmlab://resnet50_v1c',\n    backbone=dict(\n        type='ResNetV1c',\n"
            f"        depth=50,\n        num_stages=4,\n        out_indices=(0, 1, 2, 3),\n        {settings}\n"
            f"        norm_cfg=dict(type='SyncBN', requires_grad=True),\n        norm_eval=False,\n"
            f"        style='pytorch',\n        contract_dilation=True),\n"
            f"    decode_head=dict(type='DepthwiseSeparableASPPHead', in_channels=2048, channels=512))\n")


def test_mmseg_output_stride_comes_from_the_file_and_a_contradiction_is_refused(tmp_path):
    """mmseg's d8 and d16-mg124 files have the same keys: the saved config or the name tells them apart."""
    torch.manual_seed(0)
    source = MMSegEncoderDecoder(19)
    named = tmp_path / 'deeplabv3plus_r50-d8_512x1024_80k_cityscapes_20200606_114049-f9fb496d.pth'
    torch.save({'meta': {'mmseg_version': '0.11.0', 'CLASSES': tuple(cityscapes().names)},
                'state_dict': source.state_dict()}, named)  # 0.x zoo file without its config: the name says d8
    assert_same_outputs(source, named, output_stride=None)
    with pytest.raises(CheckpointError, match=r'trained as output_stride 8 \(its mmseg file name\), but '
                                              r'output_stride is 32'):
        resolved_semantic_config(SemanticModelConfig(checkpoint=str(named), output_stride=32))
    multi_grid = tmp_path / 'model.pth'
    torch.save({'meta': {'config': mmseg_config_text(d8=False)}, 'state_dict': source.state_dict()}, multi_grid)
    with pytest.raises(CheckpointError, match=r'multi-grid encoder \(multi_grid=\(1, 2, 4\), its config says\)'):
        resolved_semantic_config(SemanticModelConfig(checkpoint=str(multi_grid)))


def test_weights_that_need_code_are_still_refused(tmp_path):
    """Placeholders stand in for what is beside the weights; weights pickled as objects stay refused."""
    module = nn.Conv2d(3, 4, 1)
    torch.save({'meta': {}, 'state_dict': module}, tmp_path / 'module.pth')
    with pytest.raises(CheckpointError, match=r'needs code .*: its weights are a pickled torch\.nn\.modules\.conv'):
        read_state_dict(tmp_path / 'module.pth')
    torch.save({'state_dict': {'conv.weight': torch.zeros(1), 'conv.extra': HistoryBuffer([1.0])}},
               tmp_path / 'mixed.pth')
    with pytest.raises(CheckpointError, match=r'its weights name mmengine\.logging\.history_buffer\.HistoryBuffer'):
        read_state_dict(tmp_path / 'mixed.pth')


def test_foreign_checkpoint_with_wrong_classes_names_the_mismatch(tmp_path):
    source = VainFDeepLabV3Plus(21)  # VOC classes, not Cityscapes
    path = tmp_path / 'voc.pth'
    torch.save({'model_state': source.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r'head\.classifier\.weight: checkpoint \(21, 256, 1, 1\)'):
        build_semantic_network(SemanticModelConfig(architecture='deeplabv3plus_resnet50', checkpoint=str(path)),
                               cityscapes())


def test_vainf_mobilenet_checkpoint_is_refused_clearly(tmp_path):
    path = tmp_path / 'mobilenet.pth'
    torch.save({'model_state': {'backbone.low_level_features.0.0.weight': torch.zeros(1),
                                'classifier.classifier.3.weight': torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match='MobileNetV2 checkpoints are not supported'):
        build_semantic_network(SemanticModelConfig(architecture='deeplabv3plus_resnet50', checkpoint=str(path)),
                               cityscapes())
