"""A folder of built model artifacts (ONNX files, TensorRT engines), each with a JSON sidecar.

The sidecar records everything the artifact depends on (weights hash, ONNX hash, TensorRT
version, GPU, precision, input shapes, label set, normalisation). An artifact is reused only
when all of it matches and the file's checksum is intact; otherwise it is rebuilt, and the
reason is logged, so a node never runs an engine built for another GPU, model or precision.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
SIDECAR_SUFFIX = '.json'
Loaded = TypeVar('Loaded')


def default_cache_dir() -> Path:
    """$SEG_MODELS_CACHE_DIR, else $XDG_CACHE_HOME/seg_models, else ~/.cache/seg_models."""
    if os.environ.get('SEG_MODELS_CACHE_DIR'):
        return Path(os.environ['SEG_MODELS_CACHE_DIR'])
    base = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
    return base / 'seg_models'


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def module_sha256(module: nn.Module) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, bytes): identifies the weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)}'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """An artifact in the cache and why it was (re)used."""

    path: Path
    reused: bool
    reason: str


class EngineCache:
    """Artifacts named ``<stem><suffix>`` with sidecars ``<stem><suffix>.json`` in ``directory``."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_cache_dir()

    def artifact_path(self, stem: str, suffix: str) -> Path:
        return self.directory / f'{stem}{suffix}'

    def check(self, stem: str, suffix: str, key: dict) -> CacheEntry:
        """Whether the cached artifact can be reused for ``key``; the reason says why not."""
        path = self.artifact_path(stem, suffix)
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        if not path.is_file() or not sidecar.is_file():
            return CacheEntry(path, False, 'no cached artifact')
        try:
            recorded = json.loads(sidecar.read_text())
            recorded_key, recorded_sha = recorded['key'], recorded['sha256']
        except (OSError, ValueError, KeyError, TypeError) as error:
            return CacheEntry(path, False, f'metadata sidecar {sidecar.name} is unreadable ({error})')
        changed = [f'{field}: {recorded_key.get(field)!r} -> {value!r}'
                   for field, value in key.items() if recorded_key.get(field) != value]
        changed += [f'{field}: no longer recorded' for field in recorded_key if field not in key]
        if changed:
            return CacheEntry(path, False, 'inputs changed (' + '; '.join(changed) + ')')
        if file_sha256(path) != recorded_sha:
            return CacheEntry(path, False, f'{path.name} is corrupt (checksum differs from its sidecar)')
        return CacheEntry(path, True, 'cached artifact matches')

    def build(self, stem: str, suffix: str, key: dict, build: Callable[[Path], None]) -> Path:
        """Run ``build(tmp_path)`` and publish the result atomically, sidecar last. The sidecar
        records this build's checksum: should another process publish the same name in between,
        the pair no longer matches and the next check rebuilds instead of trusting it."""
        path = self.artifact_path(stem, suffix)
        self.directory.mkdir(parents=True, exist_ok=True)
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        sidecar.unlink(missing_ok=True)  # from here until the end, the old artifact is not trusted
        descriptor, temporary = tempfile.mkstemp(prefix=f'.{stem}.', suffix=suffix, dir=self.directory)
        os.close(descriptor)
        try:
            build(Path(temporary))
            sha256 = file_sha256(temporary)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
        sidecar.write_text(json.dumps({'key': key, 'sha256': sha256}, indent=2, sort_keys=True))
        return path

    def get_or_build(self, stem: str, suffix: str, key: dict, build: Callable[[Path], None],
                     load: Callable[[Path], Loaded]) -> tuple[Loaded, CacheEntry]:
        """Load the cached artifact when it matches ``key``; otherwise, or when loading it fails
        (corrupt or incompatible file), build it anew and load that."""
        entry = self.check(stem, suffix, key)
        if entry.reused:
            try:
                return load(entry.path), entry
            except Exception as error:  # any loader failure means: do not trust this file
                entry = CacheEntry(entry.path, False, f'cached {entry.path.name} cannot be loaded ({error})')
        LOGGER.info('building %s: %s', entry.path.name, entry.reason)
        path = self.build(stem, suffix, key, build)
        return load(path), CacheEntry(path, False, f'built: {entry.reason}')

    def entries(self) -> list[tuple[Path, Optional[dict]]]:
        """Artifacts in the cache with their recorded keys (None where the sidecar is missing)."""
        found = []
        for sidecar in sorted(self.directory.glob('*' + SIDECAR_SUFFIX)):
            artifact = sidecar.with_name(sidecar.name[:-len(SIDECAR_SUFFIX)])
            try:
                key = json.loads(sidecar.read_text()).get('key')
            except (OSError, ValueError):
                key = None
            found.append((artifact, key))
        return found
