"""Training checkpoints: weights as safetensors (loadable as ``checkpoint:`` anywhere), the optimiser,
schedule position and RNG in a state file beside them, both written then renamed.

A checkpoint is ``<run>/checkpoints/iter_NNNNNN.safetensors`` + ``.state.pt``; ``last.json`` names
the newest complete one and is replaced only after both files are in place, so a run killed or out
of disk while saving leaves the previous checkpoint valid and named. The weights file carries the
model card in its metadata (``MODEL_CARD_KEY``): what a node needs to run the weights (architecture,
label set, input size) travels with them.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from seg_models.checkpoints.model_card import MODEL_CARD_KEY

LAST = 'last.json'
KEEP = 2  # periodic checkpoints kept besides the newest


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed onto ``path`` only if the block succeeds,
    removed otherwise (disk full, interrupted): never a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        with open(temporary, 'rb') as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], model_card: dict,
                 dtype: Optional[torch.dtype] = None) -> Path:
    """Weights (``dtype``: e.g. float16 for a smaller shipped file) with the model card as metadata."""
    from safetensors.torch import save_file

    tensors = {name: (value.to(dtype) if dtype is not None and value.is_floating_point() else value)
               .detach().cpu().contiguous() for name, value in state_dict.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={MODEL_CARD_KEY: json.dumps(model_card)})
    return path


@dataclass(frozen=True)
class Checkpoint:
    iteration: int
    weights: Path
    state: Path


class CheckpointFolder:
    """The checkpoints of one run."""

    def __init__(self, run_folder: Path) -> None:
        self.folder = Path(run_folder) / 'checkpoints'

    def last(self) -> Optional[Checkpoint]:
        """The newest complete checkpoint, or None."""
        try:
            entry = json.loads((self.folder / LAST).read_text())
        except (OSError, ValueError):
            return None
        checkpoint = Checkpoint(int(entry['iteration']), self.folder / entry['weights'], self.folder / entry['state'])
        return checkpoint if checkpoint.weights.is_file() and checkpoint.state.is_file() else None

    def save(self, iteration: int, state_dict: dict[str, torch.Tensor], model_card: dict,
             training_state: Callable[[], dict]) -> Checkpoint:
        """Write the checkpoint of ``iteration``, then point ``last.json`` at it, then drop old ones."""
        stem = f'iter_{iteration:06d}'
        checkpoint = Checkpoint(iteration, self.folder / f'{stem}.safetensors', self.folder / f'{stem}.state.pt')
        save_weights(checkpoint.weights, state_dict, model_card)
        with atomic_path(checkpoint.state) as temporary:
            torch.save(training_state(), temporary)
        with atomic_path(self.folder / LAST) as temporary:
            temporary.write_text(json.dumps({'iteration': iteration, 'weights': checkpoint.weights.name,
                                             'state': checkpoint.state.name}))
        self._prune(keep=checkpoint)
        return checkpoint

    def _prune(self, keep: Checkpoint) -> None:
        weights = sorted(self.folder.glob('iter_*.safetensors'))
        for old in weights[:-(KEEP + 1)]:
            if old != keep.weights:
                old.unlink(missing_ok=True)
                old.with_name(old.name.replace('.safetensors', '.state.pt')).unlink(missing_ok=True)


def load_training_state(path: Path) -> dict:
    """A state file as written by ``CheckpointFolder.save`` (tensors and plain values only)."""
    return torch.load(path, map_location='cpu', weights_only=True)
