"""``checkpoint: NAME``: a registry name in a config becomes the fetched file and its settings."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from seg_models.checkpoints.fetch import fetch
from seg_models.checkpoints.fixed_settings import apply_fixed_settings
from seg_models.checkpoints.reading import CheckpointError
from seg_models.checkpoints.registry import get_named_checkpoint, looks_like_a_name


def resolved_named_checkpoint(config: Any, task: str) -> Any:
    """``config`` with a named checkpoint fetched (once, into the engine cache folder) and the
    entry's settings applied; a path (or nothing) is left as it is and never downloads."""
    name = config.checkpoint
    if not looks_like_a_name(name) or Path(name).exists():
        return config
    try:
        entry = get_named_checkpoint(name)
    except KeyError as error:
        raise CheckpointError(f'checkpoint {name} is neither a file nor a named checkpoint: {error.args[0]}') from None
    if entry.task != task:
        raise CheckpointError(f'checkpoint {name} is {_a(entry.task)} model, not {_a(task)} one')
    path = fetch(entry, cache_dir=config.deployment.engine_dir or None)
    config = dataclasses.replace(config, checkpoint=str(path))
    return apply_fixed_settings(config, entry.settings, str(path), f'named checkpoint {name}')


def resolved_instance_config(config: Any) -> Any:
    """The instance task's config with what its weights fix filled in (a named checkpoint)."""
    return resolved_named_checkpoint(config, 'instance')


def _a(word: str) -> str:
    return f'{"an" if word[0] in "aeiou" else "a"} {word}'
