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
from typing import Callable, Iterator, Optional, TypeVar

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)
SIDECAR_SUFFIX = '.json'
MAX_ENTRIES_PER_STEM = 4  # per artifact stem: e.g. one model at a few input sizes or thresholds
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


def onnx_sha256(path: str | Path) -> str:
    """Hash of an ONNX model and of every external data file it names (``model.onnx.data``, as the
    dynamo exporter writes): swapping the weights in a data file changes it."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    locations = sorted({entry.value for tensor in _graph_tensors(model.graph)
                        if tensor.data_location == onnx.TensorProto.EXTERNAL
                        for entry in tensor.external_data if entry.key == 'location'})
    digest = hashlib.sha256(file_sha256(path).encode())
    for location in locations:
        digest.update(f'{location}:{file_sha256(path.parent / location)}'.encode())
    return digest.hexdigest()


def _graph_tensors(graph) -> Iterator:
    """Initializers and tensor attributes of ``graph`` and its subgraphs (If, Loop, Scan bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField('t'):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField('g') else []) + list(attribute.graphs):
                yield from _graph_tensors(subgraph)


def checked_onnx(path: Path) -> Path:
    """``path`` once the ONNX checker has loaded and accepted it (a cached file that is corrupt but
    matches its sidecar is then rebuilt instead of failing later)."""
    import onnx

    onnx.checker.check_model(str(path))
    return path


def module_sha256(module: nn.Module) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, bytes): identifies the weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)}'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def key_digest(key: dict) -> str:
    """12 hex digits identifying everything ``key`` holds (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _recorded(sidecar: Path) -> tuple[dict, str]:
    """(key, sha256) that ``sidecar`` records; raises one of ``UNREADABLE_SIDECAR`` where it cannot."""
    recorded = json.loads(sidecar.read_text())
    return recorded['key'], recorded['sha256']


UNREADABLE_SIDECAR = (OSError, ValueError, KeyError, TypeError)


def _inputs_changed(recorded_key: dict, key: dict) -> str:
    """'inputs changed (field: old -> new; ...)', or '' where ``key`` is what was recorded."""
    changed = [f'{field}: {recorded_key.get(field)!r} -> {value!r}'
               for field, value in key.items() if recorded_key.get(field) != value]
    changed += [f'{field}: no longer recorded' for field in recorded_key if field not in key]
    return 'inputs changed (' + '; '.join(changed) + ')' if changed else ''


class CacheDirectoryError(ValueError):
    """The engine cache folder cannot be used."""


@dataclass(frozen=True)
class CacheEntry:
    """An artifact in the cache and why it was (re)used."""

    path: Path
    reused: bool
    reason: str


class EngineCache:
    """Artifacts named ``<stem>-<key digest><suffix>`` with sidecars ``<name>.json`` in ``directory``.

    The digest covers everything the key holds, so nodes with different settings (input size, score
    threshold, precision, weights ...) sharing one cache keep an entry each instead of rebuilding each
    other's file at every start; the ``MAX_ENTRIES_PER_STEM`` most recently used entries of a stem stay.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_cache_dir()
        if self.directory.exists() and not self.directory.is_dir():
            raise CacheDirectoryError(f'engine cache {self.directory} is a file, not a folder: set engine_dir to a '
                                      f'folder (or leave it empty for {default_cache_dir()})')

    def artifact_path(self, stem: str, suffix: str, key: dict) -> Path:
        return self.directory / f'{stem}-{key_digest(key)}{suffix}'

    def check(self, stem: str, suffix: str, key: dict) -> CacheEntry:
        """Whether a cached artifact can be reused for ``key``; the reason says why not (for a key
        never built, how it differs from the stem's most recent entry)."""
        path = self.artifact_path(stem, suffix, key)
        sidecar = _sidecar(path)
        if not path.is_file() or not sidecar.is_file():
            return CacheEntry(path, False, self._nearest_difference(stem, suffix, key))
        try:
            recorded_key, recorded_sha = _recorded(sidecar)
        except UNREADABLE_SIDECAR as error:
            return CacheEntry(path, False, f'metadata sidecar {sidecar.name} is unreadable ({error})')
        changed = _inputs_changed(recorded_key, key)
        if changed:
            return CacheEntry(path, False, changed)
        if file_sha256(path) != recorded_sha:
            return CacheEntry(path, False, f'{path.name} is corrupt (checksum differs from its sidecar)')
        return CacheEntry(path, True, 'cached artifact matches')

    def _nearest_difference(self, stem: str, suffix: str, key: dict) -> str:
        entries = self._entries_of(stem, suffix)
        if not entries:
            return 'no cached artifact'
        try:
            recorded_key, _ = _recorded(_sidecar(entries[0]))
        except UNREADABLE_SIDECAR:
            return 'no cached artifact for these inputs'
        return _inputs_changed(recorded_key, key) or 'no cached artifact'

    def _entries_of(self, stem: str, suffix: str) -> list[Path]:
        """The stem's artifacts that have a sidecar, most recently used first."""
        sidecars = [path for path in self.directory.glob(f'{stem}-*{suffix}{SIDECAR_SUFFIX}')
                    if path.name[len(stem) + 1:-len(suffix + SIDECAR_SUFFIX)].isalnum()]
        sidecars.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
        return [path.with_name(path.name[:-len(SIDECAR_SUFFIX)]) for path in sidecars]

    def build(self, stem: str, suffix: str, key: dict, build: Callable[[Path], None]) -> Path:
        """Run ``build(tmp_path)`` and publish the result atomically, sidecar last. The sidecar
        records this build's checksum: should another process publish the same name in between,
        the pair no longer matches and the next check rebuilds instead of trusting it."""
        path = self.artifact_path(stem, suffix, key)
        self.directory.mkdir(parents=True, exist_ok=True)
        sidecar = _sidecar(path)
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
        self._evict(stem, suffix)
        return path

    def _evict(self, stem: str, suffix: str) -> None:
        for path in self._entries_of(stem, suffix)[MAX_ENTRIES_PER_STEM:]:
            LOGGER.info('engine cache: removing %s, the least recently used of %s entries of %s', path.name,
                        MAX_ENTRIES_PER_STEM + 1, stem)
            _sidecar(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)

    def get_or_build(self, stem: str, suffix: str, key: dict, build: Callable[[Path], None],
                     load: Callable[[Path], Loaded]) -> tuple[Loaded, CacheEntry]:
        """Load the cached artifact when it matches ``key``; otherwise, or when loading it fails
        (corrupt or incompatible file), build it anew and load that."""
        entry = self.check(stem, suffix, key)
        if entry.reused:
            try:
                loaded = load(entry.path)
                os.utime(_sidecar(entry.path))  # most recently used: the last to be evicted
                return loaded, entry
            except Exception as error:  # any loader failure means: do not trust this file
                entry = CacheEntry(entry.path, False, f'cached {entry.path.name} cannot be loaded ({error})')
        LOGGER.info('building %s: %s', entry.path.name, entry.reason)
        path = self.build(stem, suffix, key, build)
        return load(path), CacheEntry(path, False, f'built: {entry.reason}')

    def forget(self, stem: str, suffix: str, key: dict) -> None:
        """Drop the artifact for ``key`` (and its sidecar): the next ``get_or_build`` builds it anew."""
        path = self.artifact_path(stem, suffix, key)
        _sidecar(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def entries(self) -> list[tuple[Path, Optional[dict]]]:
        """Artifacts in the cache with their recorded keys (None where the sidecar is unreadable).
        Artifacts that are JSON themselves (``backend: auto``'s measurements) have ``.json.json``
        sidecars: a ``.json`` file is a sidecar only when its artifact is there or it reads as one."""
        found = []
        for sidecar in sorted(self.directory.glob('*' + SIDECAR_SUFFIX)):
            artifact = sidecar.with_name(sidecar.name[:-len(SIDECAR_SUFFIX)])
            try:
                recorded = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                recorded = None
            is_sidecar = isinstance(recorded, dict) and {'key', 'sha256'} <= set(recorded)
            if artifact.is_file() or is_sidecar:
                found.append((artifact, recorded.get('key') if is_sidecar else None))
        return found
