"""``checkpoint: NAME``: a registry name in a config becomes the fetched file and its settings."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from seg_models.checkpoints.fetch import fetch
from seg_models.checkpoints.fixed_settings import apply_fixed_settings
from seg_models.checkpoints.reading import CheckpointError
from seg_models.checkpoints.registry import NamedCheckpoint, get_named_checkpoint, looks_like_a_name
from seg_models.deploy.engine_cache import file_sha256


def is_named_checkpoint(checkpoint: str) -> bool:
    """``checkpoint`` is a registry name, not a path: no folder, no suffix, and no such file here."""
    return looks_like_a_name(checkpoint) and not Path(checkpoint).exists()


def absolute_checkpoint(checkpoint: str) -> str:
    """A checkpoint setting to hand to another process: a path made absolute, a name as it is."""
    return checkpoint if is_named_checkpoint(checkpoint) else str(Path(checkpoint).resolve())


def checkpoint_identity(checkpoint: str) -> str:
    """What a checkpoint setting's weights are, for cache keys: a file's sha256, a name's pin."""
    if is_named_checkpoint(checkpoint):
        try:
            return f'{checkpoint}@{get_named_checkpoint(checkpoint).sha256_prefix}'
        except KeyError as error:
            raise CheckpointError(f'checkpoint {checkpoint} is neither a file nor a named checkpoint: '
                                  f'{error.args[0]}') from None
    return file_sha256(checkpoint)


def named_entry(name: str, task: str) -> NamedCheckpoint:
    """The registry entry ``name`` of ``task``; one line naming the known entries otherwise."""
    try:
        entry = get_named_checkpoint(name)
    except KeyError as error:
        raise CheckpointError(f'checkpoint {name} is neither a file nor a named checkpoint: {error.args[0]}') from None
    if entry.task != task:
        raise CheckpointError(f'checkpoint {name} is {_a(entry.task)} model, not {_a(task)} one')
    return entry


def local_checkpoint(checkpoint: str, task: str, cache_dir: Optional[str] = None) -> str:
    """A checkpoint setting as a local file: a name fetched (once), a path as it is."""
    if not is_named_checkpoint(checkpoint):
        return checkpoint
    return str(fetch(named_entry(checkpoint, task), cache_dir=cache_dir or None))


def resolved_named_checkpoint(config: Any, task: str) -> Any:
    """``config`` with a named checkpoint fetched (once, into the engine cache folder) and the
    entry's settings applied; a path (or nothing) is left as it is and never downloads."""
    name = config.checkpoint
    if not is_named_checkpoint(name):
        return config
    path = local_checkpoint(name, task, config.deployment.engine_dir)
    config = dataclasses.replace(config, checkpoint=path)
    return apply_fixed_settings(config, named_entry(name, task).settings, path, f'named checkpoint {name}')


def resolved_instance_config(config: Any) -> Any:
    """The instance task's config with what its weights fix filled in (a named checkpoint)."""
    return resolved_named_checkpoint(config, 'instance')


def _a(word: str) -> str:
    return f'{"an" if word[0] in "aeiou" else "a"} {word}'
