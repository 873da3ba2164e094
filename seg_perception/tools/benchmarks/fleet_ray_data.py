"""The other way to spread a fleet over Ray: Ray Data over frames instead of one task per bag.

Bags become rows, ``flat_map`` turns each into its frames (RGB and semantic ground truth), and
``map_batches`` runs a pool of model actors over batches of frames, each batch answered with its
summed confusion matrix. ``benchmarks fleet`` times it beside ``seg_bag evaluate-fleet``'s per-bag
actors on the same bags and workers, and checks that both give the same matrix; the faster one is
what ``evaluate-fleet`` runs (docs/evaluation_and_fleets.md, "Many bags").
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from seg_perception.evaluation.bag_io import bag_topics, cameras_in_bag
from seg_perception.evaluation.fleet_worker import BagFrame, FleetModel, Predictor, camera_batches, ground_truth_info


def bag_frames(row: dict) -> list[dict]:
    """Every camera frame of the row's bag with its semantic ground truth and the truth's id space."""
    bag = Path(row['bag'])
    available = bag_topics(bag)
    info = ground_truth_info(bag, available)
    return [{'rgb': frame.rgb, 'truth': frame.semantic, 'id_space': info.label_set}
            for camera in cameras_in_bag(available) for batch in camera_batches(bag, camera, info, 1)
            for frame in batch]


class BatchScorer:
    """A Ray Data actor: the semantic model, loaded once; a batch of frames -> its confusion matrix."""

    def __init__(self, model: FleetModel) -> None:
        self.predictor = Predictor(model)

    def __call__(self, batch: dict) -> dict:
        frames = [BagFrame((0, 0), rgb=rgb, semantic=truth) for rgb, truth in zip(batch['rgb'], batch['truth'])]
        matrix = self.predictor.semantic_confusion(frames, str(batch['id_space'][0]))
        return {'confusion': matrix[None], 'frames': np.array([len(frames)])}


def ray_data_confusion(bags: Sequence[Path], model: FleetModel, workers: int) -> tuple[np.ndarray, int]:
    """The fleet's summed semantic confusion matrix and frame count, through Ray Data on a local Ray
    of ``workers`` CPUs with ``workers`` model actors."""
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level='ERROR')
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        frames = ray.data.from_items([{'bag': str(bag)} for bag in bags]).flat_map(bag_frames, num_cpus=0.25)
        scored = frames.map_batches(BatchScorer, fn_constructor_args=(model,), batch_size=model.batch_size,
                                    compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0.75)
        total, count = None, 0
        for row in scored.iter_rows():
            total = row['confusion'] if total is None else total + row['confusion']
            count += int(row['frames'])
        return total, count
    finally:
        ray.shutdown()
