"""Fetching a named checkpoint (seg_models.checkpoints.registry) into the cache, once.

``torch.hub.download_url_to_file`` downloads into a temporary file beside the target, checks the
sha256 prefix the upstream put in the file name, and renames it into place, so an interrupted or
corrupt transfer leaves nothing behind. An ``hf://`` entry is downloaded by ``huggingface_hub``
into a folder beside the target (its partial file and metadata stay there), checked the same
way, renamed into place, and the folder removed. The full sha256 is recorded beside the file at
first fetch and checked on every later use. A lock file serialises processes fetching the same
file (nodes of one launch starting together). ``$SEG_MODELS_WEIGHTS_MIRROR`` replaces the
upstream's address with a mirror's (a fleet without internet); the file name stays the same. For
``hf://`` entries the mirror is a Hub endpoint, ``$HF_ENDPOINT``, as for every Hugging Face tool.
"""
from __future__ import annotations

import fcntl
import functools
import http.client
import logging
import os
import shutil
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from seg_models.checkpoints.reading import CheckpointError
from seg_models.checkpoints.registry import NamedCheckpoint
from seg_models.deploy.engine_cache import default_cache_dir, file_sha256

LOGGER = logging.getLogger(__name__)
MIRROR_ENV = 'SEG_MODELS_WEIGHTS_MIRROR'
HUB_ENDPOINT_ENV = 'HF_ENDPOINT'
SHA256_SUFFIX = '.sha256'


def weights_dir(cache_dir: Optional[str | Path] = None) -> Path:
    """Where fetched weights live: ``weights/`` in the engine cache folder."""
    return Path(cache_dir or default_cache_dir()) / 'weights'


def source_url(entry: NamedCheckpoint) -> str:
    """The address fetched: the mirror's (or upstream's) file; for a Hub file, its resolve URL on
    ``$HF_ENDPOINT`` (read here, not when huggingface_hub was imported)."""
    hub = entry.hub
    if hub is not None:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(hub.repo_id, hub.filename, revision=hub.revision, endpoint=_hub_endpoint())
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
        download = _download_from_hub if entry.hub is not None else _download_url
        try:
            digest = download(entry, url, target, progress)
        except _NotThePinnedFile:
            raise CheckpointError(f'{url} did not give the file {entry.name} pins (its sha256 does not start with '
                                  f'{entry.sha256_prefix}: a transfer cut short, or another file); nothing was '
                                  f'kept') from None
        except _TransferFailed as failed:
            raise CheckpointError(_unreachable(entry, url, target, failed.reason)) from None
        _record_sha256(entry, target, digest)
        LOGGER.info('fetched %s: %s', entry.name, target)
        return target


class _NotThePinnedFile(Exception):
    """The transfer ended with a file whose sha256 does not start with the entry's prefix."""


class _TransferFailed(Exception):
    """The source could not be reached or did not serve the file; ``reason`` in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _download_url(entry: NamedCheckpoint, url: str, target: Path, progress: bool) -> str:
    import torch.hub

    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=entry.sha256_prefix, progress=progress)
    except RuntimeError:  # torch.hub's hash check
        raise _NotThePinnedFile from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _TransferFailed(str(getattr(error, 'reason', error))) from None
    return file_sha256(target)


def _download_from_hub(entry: NamedCheckpoint, url: str, target: Path, progress: bool) -> str:
    """``hf_hub_download`` into a folder beside ``target`` that only this lock holder uses, so its
    ``.incomplete`` file and ``.cache/huggingface`` metadata never reach the cache: the file is
    checked, renamed into place, and the folder removed (also one left by a process killed mid-way)."""
    import httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, XetDownloadError
    from tqdm import tqdm

    hub = entry.hub
    staging = target.with_name(f'.{target.name}.download')
    shutil.rmtree(staging, ignore_errors=True)
    try:
        path = hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision, local_dir=staging,
                               endpoint=_hub_endpoint(),
                               tqdm_class=None if progress else functools.partial(tqdm, disable=True))
        digest = file_sha256(path)
        if not digest.startswith(entry.sha256_prefix):
            raise _NotThePinnedFile
        os.replace(path, target)
        return digest
    except (OSError, httpx2.HTTPError, EntryNotFoundError, XetDownloadError) as error:
        raise _TransferFailed(_first_line(error)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _hub_endpoint() -> Optional[str]:
    return os.environ.get(HUB_ENDPOINT_ENV, '').rstrip('/') or None


def _first_line(error: BaseException) -> str:
    """What went wrong, in one line: huggingface_hub wraps the cause (a refused connection) in
    paragraphs of advice."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _unreachable(entry: NamedCheckpoint, url: str, target: Path, reason: str) -> str:
    """The one-line error when the source cannot be reached: how to fetch elsewhere and copy in."""
    hub = entry.hub
    elsewhere = (f'download {entry.url} with "hf download {hub.repo_id} {hub.filename} --revision {hub.revision}"'
                 if hub is not None else f'download {entry.url}')
    mirror_env = HUB_ENDPOINT_ENV if hub is not None else MIRROR_ENV
    mirror = '' if os.environ.get(mirror_env) else f', or set {mirror_env} to a mirror serving it'
    return (f'cannot fetch {entry.name} from {url} ({reason}): on a machine with network run "seg-models weights '
            f'fetch {entry.name}" (or {elsewhere}) and copy the file to {target}{mirror}')


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
