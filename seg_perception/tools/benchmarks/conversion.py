"""Camera message -> RGB, ms per megapixel, for every camera encoding and for JPEG
and PNG compressed input (median of ``--repeats``)."""
from __future__ import annotations

import argparse

import numpy as np
from std_msgs.msg import Header

from seg_perception.messages.images import (CAMERA_ENCODINGS, array_to_image_msg, compressed_msg_to_rgb,
                                            image_msg_to_rgb, rgb_to_camera_msg)
from seg_perception.tools.benchmarks.common import add_frame_arguments, camera_frames, median_ms


def conversion_costs(rgb: np.ndarray, repeats: int) -> list[tuple[str, float]]:
    """(encoding, ms per megapixel) for every camera encoding and for JPEG/PNG compressed input."""
    height, width = rgb.shape[:2]
    megapixels = height * width / 1e6
    rng = np.random.default_rng(0)
    rows = []
    for name, encoding in CAMERA_ENCODINGS.items():
        shape = (height, width * encoding.channels)
        pixels = rng.integers(0, np.iinfo(encoding.dtype).max, shape, dtype=encoding.dtype)
        msg = array_to_image_msg(pixels, name, Header())
        msg.width = width
        rows.append((name, median_ms(lambda: image_msg_to_rgb(msg), repeats) / megapixels))
    for compression, label in (('jpeg', 'jpg'), ('png', 'png')):
        msg = rgb_to_camera_msg(rgb, Header(), compression)
        rows.append((f'compressed {label}', median_ms(lambda: compressed_msg_to_rgb(msg), repeats) / megapixels))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_frame_arguments(parser)
    parser.add_argument('--repeats', type=int, default=20, help='timings per encoding')


def run(args: argparse.Namespace) -> None:
    height, width = args.size
    frame = camera_frames(args.source, 1, height, width)[0]
    print(f'camera message -> RGB at {width}x{height}, median of {args.repeats}:')
    print(f'{"encoding":<22} {"ms per megapixel":>18}')
    for name, cost in conversion_costs(frame, args.repeats):
        print(f'{name:<22} {cost:>18.2f}')
