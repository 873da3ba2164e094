"""Fetching a named checkpoint (seg_models.checkpoints.registry) into the cache, once.

``torch.hub.download_url_to_file`` downloads into a temporary file beside the target, checks the
sha256 prefix the upstream put in the file name, and renames it into place, so an interrupted or
corrupt transfer leaves nothing behind. The full sha256 is recorded beside the file at first
fetch and checked on every later use. A lock file serialises processes fetching the same file
(nodes of one launch starting together). ``$SEG_MODELS_WEIGHTS_MIRROR`` replaces the upstream's
address with a mirror's (a fleet without internet); the file name stays the same.
"""
from __future__ import annotations

import fcntl
import http.client
import logging
import os
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from seg_models.checkpoints.reading import CheckpointError
from seg_models.checkpoints.registry import NamedCheckpoint
from seg_models.deploy.engine_cache import default_cache_dir, file_sha256

LOGGER = logging.getLogger(__name__)
MIRROR_ENV = 'SEG_MODELS_WEIGHTS_MIRROR'
SHA256_SUFFIX = '.sha256'


def weights_dir(cache_dir: Optional[str | Path] = None) -> Path:
    """Where fetched weights live: ``weights/`` in the engine cache folder."""
    return Path(cache_dir or default_cache_dir()) / 'weights'


def source_url(entry: NamedCheckpoint) -> str:
    mirror = os.environ.get(MIRROR_ENV, '').rstrip('/')
    return f'{mirror}/{entry.file_name}' if mirror else entry.url


def fetch(entry: NamedCheckpoint, cache_dir: Optional[str | Path] = None, progress: bool = True) -> Path:
    """The local path of ``entry``'s file, downloaded first if the cache does not hold it."""
    target = weights_dir(cache_dir) / entry.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        if target.is_file():
            _check_recorded_sha256(entry, target)
            return target
        url = source_url(entry)
        LOGGER.info('fetching %s from %s (%s)', entry.name, url, entry.licence)
        import torch.hub

        try:
            torch.hub.download_url_to_file(url, str(target), hash_prefix=entry.sha256_prefix, progress=progress)
        except RuntimeError:  # torch.hub's hash check
            raise CheckpointError(f'{url} did not give the file {entry.name} pins (its sha256 does not start with '
                                  f'{entry.sha256_prefix}: a transfer cut short, or another file); nothing was '
                                  f'kept') from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise CheckpointError(
                f'cannot fetch {entry.name} from {url} ({getattr(error, "reason", error)}): on a machine with network '
                f'run "seg-models weights fetch {entry.name}" (or download {entry.url}) and copy the file to {target}'
                f'{"" if os.environ.get(MIRROR_ENV) else f", or set {MIRROR_ENV} to a mirror serving it"}') from None
        _record_sha256(entry, target)
        LOGGER.info('fetched %s: %s', entry.name, target)
        return target


def _check_recorded_sha256(entry: NamedCheckpoint, target: Path) -> None:
    """The file is the one fetched first (its recorded sha256), or, copied in by hand, the one the
    entry pins (its sha256 prefix); anything else is refused."""
    record = target.with_name(target.name + SHA256_SUFFIX)
    digest = file_sha256(target)
    expected = record.read_text().strip() if record.is_file() else ''
    if expected and digest != expected:
        raise CheckpointError(f'{target} changed since it was fetched (sha256 {digest[:16]}..., recorded '
                              f'{expected[:16]}...): delete it to fetch {entry.name} again')
    if not expected:
        if not digest.startswith(entry.sha256_prefix):
            raise CheckpointError(f'{target} is not the file {entry.name} pins (its sha256 does not start with '
                                  f'{entry.sha256_prefix}): delete it or copy the right file there')
        _record_sha256(entry, target, digest)


def _record_sha256(entry: NamedCheckpoint, target: Path, digest: str = '') -> None:
    record = target.with_name(target.name + SHA256_SUFFIX)
    partial = record.with_name(record.name + '.partial')
    partial.write_text((digest or file_sha256(target)) + '\n')
    os.replace(partial, record)


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One process at a time fetches (or checks) ``target``; the others wait, then find it there."""
    with open(target.with_name(target.name + '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
