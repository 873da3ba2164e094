"""Reading checkpoints without executing code, and loading them with every key accounted for."""
from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)

# Containers that training frameworks wrap a state dict in (torchvision scripts, VainF, mmseg, ...).
STATE_DICT_CONTAINER_KEYS = ('state_dict', 'model_state', 'model')
MAX_CONTAINER_DEPTH = 4
UNPICKLER_BOILERPLATE = ('weights_only', 'Weights only load failed', 'Check the documentation')


UNTRAINED_SEED = 0


@contextmanager
def reproducible_untrained_weights() -> Iterator[None]:
    """Networks built inside get the same random initial weights every time (the caller's random
    state is left as it was): an untrained node behaves the same after a restart or a lifecycle
    re-activation, and its exported ONNX file is reused from the engine cache."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        yield


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely or does not fit the network."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch file loaded with ``weights_only=True``.

    A file whose unpickling would run code is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    if path.stat().st_size == 0:
        raise CheckpointError(f'checkpoint {path} is empty (0 bytes): an interrupted download or copy?')
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix == '.safetensors':
            loaded = load_file(str(path), device='cpu')
        else:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # e.g. the pickle protocol; the file loads or is refused
                loaded = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _weights_unpickler_reason(str(error))
        protocol_4 = 'unsupported operand' in reason.lower() and _pickle_protocol(path) >= 4
        code = _code_a_plain_pickle_names(path) if protocol_4 else None
        if code:
            reason = f'it names {code}'
        elif protocol_4:
            raise CheckpointError(f'checkpoint {path} is a legacy (non-zip) torch file with pickle protocol 4 or '
                                  f'newer, which the safe loader does not read: re-save it with torch.save() in its '
                                  f'default format, or as safetensors') from None
        if code or 'unsupported global' in reason.lower():
            raise CheckpointError(
                f'checkpoint {path} needs code to be unpickled and was refused (only tensors and plain '
                f'containers are loaded; re-save it as a plain state dict or safetensors): {reason}') from None
        raise CheckpointError(f'checkpoint {path} is corrupt or not a checkpoint: {reason}') from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, SafetensorError) as error:
        raise CheckpointError(f'checkpoint {path} is corrupt or not a checkpoint: {error}') from None
    return _unwrap_state_dict(loaded, path)


# What a plain (non-zip) torch pickle of tensors names: anything else is code to run.
TENSOR_PICKLE_GLOBALS = ('collections.OrderedDict', 'torch._utils.', 'torch.', '_codecs.encode')


def _pickle_protocol(path: Path) -> int:
    """The protocol a plain pickle declares in its first opcode (PROTO), 0 for anything else."""
    with open(path, 'rb') as stream:
        head = stream.read(2)
    return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else 0


def _code_a_plain_pickle_names(path: Path):
    """The first global a plain pickle (legacy torch.save, pickle protocol 2 to 5) would call that is
    not a tensor's, found by reading its opcodes (pickletools; nothing is executed), or None.
    torch's weights-only loader stops at protocol 4's opcodes before it sees the globals."""
    import pickletools

    strings: list[str] = []
    try:
        with open(path, 'rb') as stream:
            for opcode, argument, _ in pickletools.genops(stream):
                if opcode.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE', 'BINUNICODE8'):
                    strings.append(argument)
                name = (argument.replace(' ', '.') if opcode.name == 'GLOBAL' else
                        '.'.join(strings[-2:]) if opcode.name == 'STACK_GLOBAL' else None)
                if name and not name.startswith(TENSOR_PICKLE_GLOBALS):
                    return name
    except (ValueError, EOFError, pickle.UnpicklingError):
        return None
    return None


def _weights_unpickler_reason(message: str) -> str:
    """The one line of torch's long weights-only error that says what was wrong, without its
    boilerplate, which suggests retrying with weights_only=False: never give that advice. (Its
    wording differs between torch versions and pickle formats.)"""
    marker = 'WeightsUnpickler error:'
    lines = [line.strip() for line in message.splitlines()]
    for line in lines:
        if marker in line and line.split(marker, 1)[1].strip():
            return line.split(marker, 1)[1].strip().split('. ')[0]
    reasons = [line for line in lines if line and marker not in line
               and not any(words in line for words in UNPICKLER_BOILERPLATE)]
    return reasons[0] if reasons else 'unreadable pickle data'


def _unwrap_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(MAX_CONTAINER_DEPTH + 1):  # bounded: a container can hold itself ({'model': <itself>})
        if not isinstance(loaded, Mapping) or _is_tensor_mapping(loaded):
            break
        container_key = next((key for key in STATE_DICT_CONTAINER_KEYS if key in loaded), None)
        if container_key is None:
            raise CheckpointError(
                f'checkpoint {path} holds no state dict (top-level keys: {sorted(map(str, loaded))[:10]})')
        loaded = loaded[container_key]
    else:
        raise CheckpointError(f'checkpoint {path} nests {"/".join(STATE_DICT_CONTAINER_KEYS)} containers more '
                              f'than {MAX_CONTAINER_DEPTH} deep (or holds itself): no state dict found')
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f'checkpoint {path} holds a {type(loaded).__name__}, not a state dict')
    return dict(loaded)


def _is_tensor_mapping(mapping: Mapping) -> bool:
    return bool(mapping) and all(isinstance(value, torch.Tensor) for value in mapping.values())


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module``; any missing, unexpected or misshaped key is an error
    that names the keys, so a wrong checkpoint never half-loads silently."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f'{key}: checkpoint {tuple(state_dict[key].shape)} vs network {tuple(expected[key].shape)}'
        for key in set(expected) & set(state_dict) if state_dict[key].shape != expected[key].shape)
    problems = []
    for title, keys in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', misshaped)):
        if keys:
            shown = ', '.join(keys[:20]) + (f', ... ({len(keys)} in all)' if len(keys) > 20 else '')
            problems.append(f'{title}: {shown}')
    if problems:
        raise CheckpointError(f'checkpoint {source} does not fit the network; ' + '; '.join(problems))
    module.load_state_dict(state_dict, strict=True)
    LOGGER.info('loaded %d tensors from %s', len(state_dict), source)
