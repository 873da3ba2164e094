"""Settings a weights file fixes (its model card, its upstream's config, its registry entry), applied
to a config: a setting left at its default takes the weights' value, one set otherwise that
contradicts it is refused in one line."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

from seg_models.checkpoints.reading import CheckpointError
from seg_models.configs import DEFAULT_INPUT_SIZE

LOGGER = logging.getLogger(__name__)


def apply_fixed_settings(config: Any, fixed: Mapping[str, Any], checkpoint: str, source: str) -> Any:
    """``config`` with the ``fixed`` settings (config field -> value) read from ``source``. The
    input size is a preference, not a contradiction: taken only where the config has the default."""
    defaults = type(config)()
    changes = {}
    for name, value in fixed.items():
        current = getattr(config, name)
        if name == 'input_size':
            value = tuple(value)
            if current == DEFAULT_INPUT_SIZE and current != value:
                changes[name] = value  # the size it was trained for, unless set otherwise
            continue
        if current == value:
            continue
        if current != getattr(defaults, name):
            raise CheckpointError(f'checkpoint {checkpoint} was trained as {name} {value} ({source}), but {name} '
                                  f'is {current}: leave {name} unset or set it to {value}')
        LOGGER.info('checkpoint %s: %s %s (%s)', checkpoint, name, value, source)
        changes[name] = value
    return dataclasses.replace(config, **changes)
