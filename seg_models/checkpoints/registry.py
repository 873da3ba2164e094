"""Official checkpoints by name: one table, and a lookup that names the known entries.

Each entry pins a file its upstream publishes (URL and the sha256 prefix in its name, checked as
torchvision checks it), the settings it runs with, its licence and the metrics its upstream
reports. ``checkpoint: NAME`` wherever a checkpoint path is accepted fetches it once into the
cache (seg_models.checkpoints.fetch); a local path is never looked up here and never downloads.
An entry's ``url`` may be ``hf://owner/repo@COMMIT/path/in/repo``: a file on the Hugging Face Hub,
pinned to a commit.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HUB_SCHEME = 'hf://'


@dataclass(frozen=True)
class HubFile:
    """Where an ``hf://owner/repo@COMMIT/path`` entry lives: ``hf_hub_download``'s arguments."""
    repo_id: str
    revision: str
    filename: str


def hub_file(url: str) -> Optional[HubFile]:
    """The Hub file an ``hf://`` URL names, None for any other URL. The revision must be a full
    commit sha: the registry pins a file, and a branch or tag can move."""
    if not url.startswith(HUB_SCHEME):
        return None
    match = re.fullmatch(r'hf://([^/@]+/[^/@]+)@([^/]+)/(.+)', url)
    if match is None:
        raise ValueError(f'{url} is not hf://owner/repo@COMMIT/path/in/repo')
    if re.fullmatch(r'[0-9a-f]{40}', match.group(2)) is None:
        raise ValueError(f'{url}: revision {match.group(2)} is not a commit sha (40 hex digits); the registry pins a '
                         f'file and a branch or tag can move: give the commit it points to')
    return HubFile(*match.groups())


@dataclass(frozen=True)
class NamedCheckpoint:
    name: str
    task: str
    url: str  # the upstream's own address ($SEG_MODELS_WEIGHTS_MIRROR serves the same file name) or hf://
    sha256_prefix: str  # the hash prefix in the upstream's file name
    settings: dict = field(default_factory=dict)  # config fields the weights run with
    licence: str = ''
    upstream: str = ''  # where it comes from and what its upstream measured

    def __post_init__(self) -> None:
        hub_file(self.url)  # an hf:// URL that pins no commit is refused when the entry is made

    @property
    def hub(self) -> Optional[HubFile]:
        return hub_file(self.url)

    @property
    def file_name(self) -> str:
        """The cached file's name: the URL's last part; for a Hub file, repository, commit and path
        too (Hub files are often all called model.safetensors)."""
        hub = self.hub
        if hub is None:
            return self.url.rsplit('/', 1)[-1]
        return '--'.join((hub.repo_id.replace('/', '--'), hub.revision[:12], hub.filename.replace('/', '--')))


_TORCHVISION = 'https://download.pytorch.org/models/'
_MMSEG = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3plus/'
_TORCHVISION_LICENCE = ('BSD-3-Clause (torchvision); trained on COCO 2017, whose annotations are CC BY 4.0 and '
                        'images under their own terms')
_MMSEG_LICENCE = 'Apache-2.0 (mmsegmentation); trained on {data}, whose terms apply'

NAMED_CHECKPOINTS: dict[str, NamedCheckpoint] = {entry.name: entry for entry in (
    NamedCheckpoint(
        'maskrcnn_resnet50_fpn_coco', 'instance', _TORCHVISION + 'maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth',
        'bf2d0c1e', {'architecture': 'maskrcnn_resnet50_fpn', 'label_set': 'coco_things',
                     'output_label_set': 'cityscapes_things'},
        _TORCHVISION_LICENCE,
        'torchvision MaskRCNN_ResNet50_FPN_Weights.COCO_V1: COCO val2017 box AP 37.9, mask AP 34.6'),
    NamedCheckpoint(
        'maskrcnn_resnet50_fpn_v2_coco', 'instance', _TORCHVISION + 'maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth',
        '73cbd019', {'architecture': 'maskrcnn_resnet50_fpn_v2', 'label_set': 'coco_things',
                     'output_label_set': 'cityscapes_things'},
        _TORCHVISION_LICENCE,
        'torchvision MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1: COCO val2017 box AP 47.4, mask AP 41.8'),
    NamedCheckpoint(
        'deeplabv3plus_r50_d8_cityscapes', 'semantic',
        _MMSEG + 'deeplabv3plus_r50-d8_512x1024_80k_cityscapes/'
                 'deeplabv3plus_r50-d8_512x1024_80k_cityscapes_20200606_114049-f9fb496d.pth',
        'f9fb496d', {'architecture': 'deeplabv3plus_resnet50', 'output_stride': 8, 'label_set': 'cityscapes'},
        _MMSEG_LICENCE.format(data='Cityscapes'),
        'mmsegmentation deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024: Cityscapes val mIoU 80.09'),
    NamedCheckpoint(
        'deeplabv3plus_r101_d8_cityscapes', 'semantic',
        _MMSEG + 'deeplabv3plus_r101-d8_512x1024_80k_cityscapes/'
                 'deeplabv3plus_r101-d8_512x1024_80k_cityscapes_20200606_114143-068fcfe9.pth',
        '068fcfe9', {'architecture': 'deeplabv3plus_resnet101', 'output_stride': 8, 'label_set': 'cityscapes'},
        _MMSEG_LICENCE.format(data='Cityscapes'),
        'mmsegmentation deeplabv3plus_r101-d8_4xb2-80k_cityscapes-512x1024: Cityscapes val mIoU 80.97'),
    NamedCheckpoint(
        'deeplabv3plus_r50_d8_mapillary_vistas', 'semantic',
        _MMSEG + 'deeplabv3plus_r50-d8_4xb2-300k_mapillay_v1_65-1280x1280/'
                 'deeplabv3plus_r50-d8_4xb2-300k_mapillay_v1_65-1280x1280_20230301_110504-655f8e43.pth',
        '655f8e43', {'architecture': 'deeplabv3plus_resnet50', 'output_stride': 8, 'label_set': 'mapillary_vistas'},
        _MMSEG_LICENCE.format(data='Mapillary Vistas v1.2 (CC BY-NC-SA 4.0: non-commercial)'),
        'mmsegmentation deeplabv3plus_r50-d8_4xb2-300k_mapillay_v1_65-1280x1280: Mapillary Vistas v1.2 val mIoU '
        '47.35'),
)}


REGISTRY_ENV = 'SEG_MODELS_WEIGHTS_REGISTRY'


def named_checkpoints() -> dict[str, NamedCheckpoint]:
    """The table above, with the entries of the YAML file ``$SEG_MODELS_WEIGHTS_REGISTRY`` names (a
    list of mappings with the fields of ``NamedCheckpoint``: a fleet's own models by name; an entry
    with a name above replaces it)."""
    path = os.environ.get(REGISTRY_ENV)
    if not path:
        return dict(NAMED_CHECKPOINTS)
    import yaml

    try:
        entries = yaml.safe_load(Path(path).read_text()) or []
        extra = {entry['name']: NamedCheckpoint(**entry) for entry in entries}
    except (OSError, yaml.YAMLError, TypeError, KeyError) as error:
        raise ValueError(f'{REGISTRY_ENV}={path}: not a list of named checkpoints ({error})') from None
    except ValueError as error:  # an entry's own check (an hf:// URL pinning no commit)
        raise ValueError(f'{REGISTRY_ENV}={path}: {error}') from None
    return {**NAMED_CHECKPOINTS, **extra}


def get_named_checkpoint(name: str) -> NamedCheckpoint:
    """The entry called ``name``; an unknown name is refused naming the known ones."""
    known = named_checkpoints()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f'no named checkpoint {name!r}; known: {", ".join(known)}') from None


def looks_like_a_name(checkpoint: str) -> bool:
    """A checkpoint setting that is a registry name rather than a path: no folder, no file suffix."""
    return bool(checkpoint) and '/' not in checkpoint and '.' not in checkpoint
