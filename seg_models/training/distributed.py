"""The same training run on several processes: under torchrun (the environment names rank and world
size) or as Ray Train workers (``TorchTrainer``, one per GPU, on a Ray cluster the fleet evaluation
already uses). Both end in ``seg_models.training.run.train`` with ``torch.distributed`` initialised.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import torch
import torch.distributed as dist

from seg_models.training.run import TrainingSettings, check_batch_split, train


def started_by_torchrun() -> bool:
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and int(os.environ['WORLD_SIZE']) > 1


def initialise_from_environment() -> None:
    """torchrun's process group: NCCL where each process has a GPU, else gloo (CPU)."""
    if not dist.is_initialized():
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        if backend == 'nccl':
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        dist.init_process_group(backend)


def train_with_torchrun(settings: TrainingSettings, progress: bool = True) -> dict:
    initialise_from_environment()
    try:
        return train(settings, progress=progress)
    finally:
        dist.destroy_process_group()


def _ray_worker(config: dict) -> None:
    """One Ray Train worker: Ray has set up torch.distributed; the run is the same as under torchrun."""
    import ray.train

    settings = TrainingSettings(**{name: tuple(value) if isinstance(value, list) else value
                                   for name, value in config['settings'].items()})
    card = train(settings, progress=ray.train.get_context().get_world_rank() == 0)
    ray.train.report({'iterations': card['iterations']})


def train_on_ray(settings: TrainingSettings, address: str, workers: int, gpus_per_worker: float = 0.0,
                 storage: Optional[str] = None) -> dict:
    """The run on ``workers`` Ray Train workers (``address``: a cluster, or 'local' for one here)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from seg_models.checkpoints.model_card import read_model_card

    check_batch_split(settings, workers, synchronised_batch_norm=gpus_per_worker > 0)
    ray.init(address=None if address == 'local' else address, ignore_reinit_error=True, log_to_driver=True)
    trainer = TorchTrainer(
        _ray_worker, train_loop_config={'settings': dataclasses.asdict(settings)},
        torch_config=TorchConfig(backend='nccl' if gpus_per_worker else 'gloo'),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={'GPU': gpus_per_worker} if gpus_per_worker else None),
        run_config=RunConfig(name='seg_models_train', storage_path=storage or os.path.abspath(settings.output)))
    trainer.fit()
    return read_model_card(os.path.join(settings.output, 'model.safetensors'))
