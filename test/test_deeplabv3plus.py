"""DeepLabv3+ is built as in Chen et al. 2018, and checkpoints load safely with every key checked."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.segmentation.deeplabv3 import ASPP

from seg_models.checkpoints.reading import CheckpointError, load_state_dict_strict, read_state_dict
from seg_models.models.deeplabv3plus import DeepLabV3Plus, deeplabv3plus


def _aspp_rates(model: DeepLabV3Plus) -> list[int]:
    # ASPP children: 1x1 branch, three atrous branches, image pooling.
    return [branch[0].dilation[0] for branch in list(model.head.aspp.convs)[1:4]]


@pytest.mark.parametrize('backbone, output_stride, rates', [
    ('mobilenet_v3_large', 16, [6, 12, 18]),
    ('resnet50', 16, [6, 12, 18]),
    ('resnet50', 8, [12, 24, 36]),
    ('resnet101', 16, [6, 12, 18]),
])
def test_architecture_follows_the_paper(backbone, output_stride, rates):
    torch.manual_seed(0)
    model = deeplabv3plus(backbone, num_classes=19, output_stride=output_stride).eval()
    assert isinstance(model.head.aspp, ASPP)
    assert _aspp_rates(model) == rates
    assert model.head.low_level_projection[0].out_channels == 48
    assert [block[0].out_channels for block in model.head.fuse] == [256, 256]
    assert all(block[0].kernel_size == (3, 3) for block in model.head.fuse)
    images = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        features = model.backbone(images)
        logits = model(images)
    assert features['low'].shape[-2:] == (24, 40)  # stride 4
    assert features['out'].shape[-2:] == (96 // output_stride, 160 // output_stride)
    assert logits.shape == (2, 19, 96, 160)


def test_unsupported_configurations_are_refused():
    with pytest.raises(ValueError, match='output stride 16 only'):
        deeplabv3plus('mobilenet_v3_large', 19, output_stride=8)
    with pytest.raises(ValueError, match='8 or 16'):
        deeplabv3plus('resnet50', 19, output_stride=32)
    with pytest.raises(ValueError, match='unknown DeepLabv3\\+ backbone'):
        deeplabv3plus('vgg16', 19)


def _small_model(seed: int) -> DeepLabV3Plus:
    torch.manual_seed(seed)
    return deeplabv3plus('mobilenet_v3_large', num_classes=19).eval()


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_checkpoint_round_trip_reproduces_outputs(tmp_path: Path, suffix: str):
    source = _small_model(seed=1)
    path = tmp_path / f'model{suffix}'
    state = {key: value.contiguous() for key, value in source.state_dict().items()}
    save_file(state, str(path)) if suffix == '.safetensors' else torch.save(state, path)
    target = _small_model(seed=2)
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert not torch.equal(source(images), target(images))
        load_state_dict_strict(target, read_state_dict(path), str(path))
        assert torch.equal(source(images), target(images))


def test_wrapped_state_dicts_are_unwrapped(tmp_path: Path):
    source = _small_model(seed=1)
    path = tmp_path / 'wrapped.pth'
    torch.save({'model_state': source.state_dict(), 'epoch': 3}, path)
    assert set(read_state_dict(path)) == set(source.state_dict())


class _CodeOnLoad:
    """An object whose unpickling would run code: create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_checkpoint_needing_code_is_refused_and_nothing_runs(tmp_path: Path, zip_format: bool):
    marker = tmp_path / 'code_ran'
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as handle:
        torch.save({'weight': torch.zeros(1), 'payload': _CodeOnLoad(marker)}, handle, pickle_protocol=2,
                   _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match='needs code to be unpickled and was refused') as error:
        read_state_dict(path)
    assert not marker.exists()
    assert 'weights_only' not in str(error.value)  # no unsafe advice
    assert ('pathlib.Path' if zip_format else 'GLOBAL') in str(error.value)


def test_checkpoint_holding_itself_is_refused_instead_of_looping(tmp_path: Path):
    """{'model': <itself>} loads under weights_only; unwrapping it used to loop forever."""
    looped = {}
    looped['model'] = looped
    torch.save(looped, tmp_path / 'loop.pth')
    with pytest.raises(CheckpointError, match='more than 4 deep'):
        read_state_dict(tmp_path / 'loop.pth')


def test_corrupt_and_missing_checkpoints_give_clear_errors(tmp_path: Path):
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'PK\x03\x04 not really a zip file')
    with pytest.raises(CheckpointError, match='corrupt'):
        read_state_dict(corrupt)
    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(b'\x10\x00\x00')
    with pytest.raises(CheckpointError, match='corrupt'):
        read_state_dict(truncated)
    with pytest.raises(CheckpointError, match='does not exist'):
        read_state_dict(tmp_path / 'absent.pth')


def test_missing_unexpected_and_misshaped_keys_are_named():
    model = _small_model(seed=0)
    state = dict(model.state_dict())
    del state['head.classifier.bias']
    state['head.extra.weight'] = torch.zeros(1)
    state['head.classifier.weight'] = torch.zeros(7, 256, 1, 1)
    with pytest.raises(CheckpointError) as error:
        load_state_dict_strict(model, state, 'test')
    message = str(error.value)
    assert 'missing keys: head.classifier.bias' in message
    assert 'unexpected keys: head.extra.weight' in message
    assert 'head.classifier.weight: checkpoint (7, 256, 1, 1) vs network (19, 256, 1, 1)' in message
