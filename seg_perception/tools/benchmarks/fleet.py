"""A fleet evaluation on Ray with 1 and then 2 workers, and Ray Data over frames beside it.

8 small bags made from a labelled image folder are evaluated with ``seg_bag evaluate-fleet``'s
code on a local Ray, with 1 and then 2 workers, end to end (Ray's start and each worker's model
load included, as a user waits for them): frames per second and the ratio; then Ray Data over
frames (``fleet_ray_data.py`` beside this module) with 2 workers beside the task per bag, with the
ratio and a check that both give the same confusion matrix.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from seg_models.data.frame_sources import SYNTHETIC
from seg_perception.tools.benchmarks.common import add_input_size_argument

BAGS = 8


def fleet_scaling(source: Path, bags: int, frames_per_bag: int, input_size: tuple[int, int],
                  worker_counts: tuple[int, ...] = (1, 2)) -> None:
    """Frames per second of a fleet evaluation of ``bags`` bags with each worker count, and the
    ratio; then, with the most workers, Ray Data over frames beside the per-bag actors."""
    from seg_perception.evaluation.datasets import open_dataset
    from seg_perception.evaluation.fleet import FleetSettings, run_fleet
    from seg_perception.evaluation.fleet_worker import FleetModel
    from seg_perception.evaluation.make_bag import make_bag
    from seg_perception.tools.benchmarks.fleet_ray_data import ray_data_confusion

    label_set = open_dataset(source).info.label_set or 'camvid'
    model = FleetModel(tasks=('semantic',), overrides=(
        f'input_height:={input_size[0]}', f'input_width:={input_size[1]}', 'backend:=pytorch',
        f'semantic_segmentation:label_set:={label_set}'))
    with tempfile.TemporaryDirectory(prefix='fleet_bench_') as folder:
        paths = []
        for index in range(bags):
            paths.append(Path(folder) / f'drive_{index}.bag')
            make_bag([open_dataset(source, max_frames=frames_per_bag)], paths[-1])
        rates, reports = {}, {}
        for workers in worker_counts:
            started = time.perf_counter()
            reports[workers] = run_fleet(paths, FleetSettings(model=model, workers=workers, cache_dir=None))
            elapsed = time.perf_counter() - started
            rates[workers] = reports[workers]['overall']['frames'] / elapsed
            print(f'{workers} worker(s), a task per bag: {reports[workers]["overall"]["frames"]} frames of {bags} bags '
                  f'in {elapsed:.1f} s = {rates[workers]:.2f} frames/s '
                  f'(mIoU {100 * reports[workers]["overall"]["miou"]:.1f}%)')
        most, fewest = worker_counts[-1], worker_counts[0]
        print(f'{most} workers / {fewest}: {rates[most] / rates[fewest]:.2f}x ({os.cpu_count()} CPU cores)')
        started = time.perf_counter()
        matrix, frames = ray_data_confusion(paths, model, most)
        elapsed = time.perf_counter() - started
        same = np.array_equal(matrix, np.array(reports[most]['overall']['confusion']))
        print(f'{most} workers, Ray Data over frames: {frames} frames in {elapsed:.1f} s = {frames / elapsed:.2f} '
              f'frames/s (confusion matrix {"equal to" if same else "DIFFERENT from"} the per-bag run\'s)')
        print(f'a task per bag / Ray Data over frames, {most} workers: {rates[most] / (frames / elapsed):.2f}x')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--source', default=SYNTHETIC, help='labelled image folder the bags are made of')
    parser.add_argument('--frames', type=int, default=10, help='frames per bag')
    add_input_size_argument(parser)


def run(args: argparse.Namespace) -> None:
    fleet_scaling(Path(args.source), bags=BAGS, frames_per_bag=args.frames, input_size=tuple(args.input_size))
