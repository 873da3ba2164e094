"""The body of ``seg-models bench`` on the CPU: the same frames through each backend at each
precision, side by side in one run.

Each row is a backend at a precision: median and best latency, the speed-up against the first row,
and how closely its answers agree with the same backend's fp32 (fp32 itself against its answers on
the frames with sensor noise: the yardstick for those figures, seg_models.bench.fidelity).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from seg_models.backends.base import BackendError
from seg_models.bench.fidelity import SENSOR_NOISE, with_sensor_noise
from seg_models.tasks import Task


@dataclass(frozen=True)
class BenchRow:
    backend: str  # the backend's one-line description
    median_ms: float
    min_ms: float
    agreement: str  # with the same backend's fp32 (fp32: with itself under sensor noise)
    trained: bool = True  # untrained weights answer near-constantly: any precision "agrees"


def bench_frames(folder: Optional[str], size: tuple[int, int], count: int) -> list[np.ndarray]:
    """``count`` frames: the first images of ``folder`` (real frames give meaningful agreement
    figures), else seeded random frames of ``size``."""
    if folder:
        from seg_models.data.frame_sources import image_files, read_rgb

        files = image_files(folder)[:count]
        if not files:
            raise ValueError(f'no images in {folder!r}')
        return [read_rgb(path) for path in files]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def compare_backends(task: Task, config_for: Callable[[str, str], Any], backends: Sequence[str],
                     precisions: Sequence[str], frames: list[np.ndarray], iterations: int,
                     warmup: int) -> list[BenchRow]:
    """A row per backend and precision that can run here (``config_for(backend, precision)`` gives
    its model config); the others are named and skipped."""
    rows = []
    for backend in backends:
        fp32_results = None
        for precision in precisions:
            try:
                segmenter = task.create_segmenter(config_for(backend, precision))
            except BackendError as error:
                print(f'skipping {backend} {precision}: {error}')
                continue
            for _ in range(warmup):
                segmenter.segment(frames)
            timings = []
            for _ in range(iterations):
                started = time.perf_counter()
                results = segmenter.segment(frames)
                timings.append(time.perf_counter() - started)
            if precision == 'fp32':  # the yardstick: fp32 against itself on frames with sensor noise
                fp32_results = results
                agreement = f'itself under {SENSOR_NOISE}: ' + task.describe_agreement(
                    results, segmenter.segment(with_sensor_noise(frames)), segmenter)
            else:
                agreement = '' if fp32_results is None else task.describe_agreement(fp32_results, results, segmenter)
            rows.append(BenchRow(segmenter.backend.describe(), float(np.median(timings)) * 1000,
                                 float(np.min(timings)) * 1000, agreement, segmenter.is_trained))
            del segmenter
    return rows


def print_comparison(rows: Sequence[BenchRow], title: str) -> None:
    baseline = rows[0].median_ms
    print(f'\n{title}:')
    print(f'{"backend":<40} {"median ms":>10} {"min ms":>10} {"speed-up vs " + rows[0].backend.split()[0]:>22}  '
          f'agreement with fp32')
    for row in rows:
        print(f'{row.backend:<40} {row.median_ms:>10.1f} {row.min_ms:>10.1f} {baseline / row.median_ms:>21.2f}x  '
              f'{row.agreement}')
    if not all(row.trained for row in rows) and any(row.agreement for row in rows):
        print('note: UNTRAINED weights (no --checkpoint): such a network answers nearly the same whatever the input, '
              'so the agreement figures above mean nothing; pass --checkpoint (and real --frames) to measure them')
