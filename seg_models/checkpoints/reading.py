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
            loaded = _torch_load_weights_only(path)
    except CheckpointError:
        raise
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
            raise _needs_code(path, reason) from None
        raise CheckpointError(f'checkpoint {path} is corrupt or not a checkpoint: {reason}') from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, SafetensorError) as error:
        raise CheckpointError(f'checkpoint {path} is corrupt or not a checkpoint: {error}') from None
    state_dict = _unwrap_state_dict(loaded, path)
    inert = _inert_objects_in(state_dict)
    if inert:
        raise _needs_code(path, f'its weights name {inert}')
    return state_dict


def read_checkpoint_meta(path: str | Path) -> Mapping:
    """The ``meta`` entry training frameworks save beside the weights (mmseg: its config text,
    classes), read without executing anything and without reading the tensors (memory-mapped); {}
    for safetensors files, files without one, or files that will be refused when the weights are read."""
    path = Path(path)
    if path.suffix == '.safetensors' or not path.is_file() or not zipfile.is_zipfile(path):
        return {}
    try:
        loaded = _torch_load_weights_only(path, mmap=True)
    except (CheckpointError, pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError):
        return {}
    meta = loaded.get('meta') if isinstance(loaded, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}


def _torch_load_weights_only(path: Path, mmap: bool = False) -> object:
    """``torch.load`` with the weights-only unpickler. Entries beside the weights that training
    frameworks pickle from their own classes (mmengine's ``message_hub``, VainF's numpy ``best_score``)
    are built as ``InertObject`` placeholders that hold their pickled state and run nothing; the
    caller refuses them where the weights should be."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # e.g. the pickle protocol; the file loads or is refused
        if not zipfile.is_zipfile(path):  # legacy torch files: the opcode scan in read_state_dict
            return torch.load(path, map_location='cpu', weights_only=True)
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except (RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
            names = []
        placeholders = [(inert_class(name), name) for name in names]
        try:
            with torch.serialization.safe_globals(placeholders):
                loaded = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
        except (pickle.UnpicklingError, RuntimeError):
            if not names:
                raise
            # the pickle calls what it built (a getattr's result, ...): code, whatever it would have been
            raise _needs_code(path, f'it names {", ".join(sorted(names))}') from None
    if names and not mmap:
        LOGGER.info('checkpoint %s: entries pickled from %s were read as inert placeholders (nothing run)',
                    path, ', '.join(sorted(names)))
    return loaded


class InertObject:
    """What an object of a class outside torch became: its pickled arguments and state, kept as data."""

    pickled_name = ''

    def __new__(cls, *arguments, **keywords):
        instance = super().__new__(cls)
        instance.arguments = arguments
        return instance

    def __init__(self, *arguments, **keywords) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f'<inert {self.pickled_name}>'


def inert_class(name: str) -> type:
    """A placeholder class that stands for the global ``name`` (class or function) in a pickle."""
    return type(name.rsplit('.', 1)[-1], (InertObject,), {'pickled_name': name})


def _inert_objects_in(state_dict: Mapping) -> str:
    """The pickled names of the placeholders found among the state dict's values, '' when none."""
    names = sorted({value.pickled_name for value in state_dict.values() if isinstance(value, InertObject)})
    return ', '.join(names)


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
    if isinstance(loaded, InertObject):
        raise _needs_code(path, f'its weights are a pickled {loaded.pickled_name}')
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f'checkpoint {path} holds a {type(loaded).__name__}, not a state dict')
    return dict(loaded)


def _is_tensor_mapping(mapping: Mapping) -> bool:
    """A state dict: tensors (and placeholders of pickled objects among them, which are refused)."""
    return bool(mapping) and all(isinstance(value, (torch.Tensor, InertObject)) for value in mapping.values()) \
        and any(isinstance(value, torch.Tensor) for value in mapping.values())


def _needs_code(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f'checkpoint {path} needs code to be unpickled and was refused (only tensors and plain '
                           f'containers are loaded; re-save it as a plain state dict or safetensors): {reason}')


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module``; any missing, unexpected or misshaped key is an error
    that names the keys, so a wrong checkpoint never half-loads silently."""
    expected = module.state_dict()
    # BatchNorm's own loader fills in a missing num_batches_tracked (files saved from FrozenBatchNorm2d,
    # torchvision's COCO weights, have none); it counts training steps and plays no part in inference
    missing = sorted(key for key in set(expected) - set(state_dict) if not key.endswith('.num_batches_tracked'))
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
