"""What several benchmarks share: their camera frames and flags, a median timer, process memory."""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from seg_models.configs import DEFAULT_INPUT_SIZE
from seg_models.data.frame_sources import SYNTHETIC, open_frames
from seg_perception.messages.dds_profile import LOCALHOST_PROFILE, use_large_images_profile

CAMERA_RATE_HZ = 30.0


def camera_frames(source: str, count: int, height: int, width: int) -> list[np.ndarray]:
    frames = [frame.rgb for frame in open_frames(source, count)]
    return [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames]


def add_frame_arguments(parser: argparse.ArgumentParser, size: tuple[int, int] = (720, 1280)) -> None:
    """``--source`` and ``--size`` of the camera frames, ``size`` (height, width) by default."""
    parser.add_argument('--source', default=SYNTHETIC, help='folder of images, video, or "synthetic"')
    parser.add_argument('--size', type=int, nargs=2, default=size, metavar=('HEIGHT', 'WIDTH'),
                        help=f'camera frame size (default {size[0]} {size[1]})')


def add_input_size_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--input-size', type=int, nargs=2, default=DEFAULT_INPUT_SIZE, metavar=('HEIGHT', 'WIDTH'),
                        help=f'network input (default {DEFAULT_INPUT_SIZE[0]} {DEFAULT_INPUT_SIZE[1]}, '
                             'as config/driving.yaml)')


def add_dds_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--default-dds', action='store_true',
                        help="publish camera frames with Fast DDS's defaults instead of the large-message "
                             'profile (64 MiB shared-memory segments) this benchmark uses otherwise')


def use_dds_profile(args: argparse.Namespace) -> None:
    """The large-message profile unless ``--default-dds``: best-effort camera frames of any size arrive."""
    if not args.default_dds:
        use_large_images_profile(os.environ, LOCALHOST_PROFILE)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def rss_mb(pid: int, field: str = 'VmRSS') -> float:
    """Resident memory of process ``pid`` now (VmRSS), or at its highest so far (VmHWM)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    return 0.0
