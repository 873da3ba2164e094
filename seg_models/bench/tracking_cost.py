"""What the tracker costs per frame on the CPU: mask IoU association beside box IoU, in one run.

    python -m seg_models.bench.tracking_cost [--frames 200] [--instances 50] [--size 1024 2048]

A synthetic Cityscapes-size camera (1024x2048) sees ``--instances`` objects, each an elliptic mask
filling its box, of street-like sizes: heights from 16 to 400 pixels with a density falling as
1/height^2 (``--size-exponent``: many far objects, a few near ones; their boxes cover about a third
of the frame; 1, log-uniform heights, is a crowd of near objects whose boxes add up to the whole
frame), widths 0.4 to 2.5 times the height (pedestrians to cars), of 8 classes (cars and people
most), moving at up to 8 pixels a frame and bouncing off the image's edges, so that boxes cross
each other and tracks must follow turns; scores are uniform in 0.3-1.0 (both ByteTrack stages
work). Each frame's instances are new objects with new mask arrays, as a segmenter gives them, made
outside the timing. The table gives the median and 95th percentile of ``MaskTracker.update`` per
frame after the first 10 frames (tracks starting), for similarity mask and box (the issue's goal:
at most 1 ms for 50 instances).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np

from seg_models.configs import TrackerSettings
from seg_models.segmenters.instance_postprocess import Instance
from seg_models.tracking import MaskTracker

CLASS_SHARES = (0.45, 0.25, 0.08, 0.06, 0.05, 0.04, 0.04, 0.03)  # car, person, rider, truck, ... bicycle
HEIGHTS = (16, 400)  # pixels
ASPECTS = (0.4, 2.5)  # width / height
MAX_SPEED = 8  # pixels per frame
WARMUP_FRAMES = 10
FRAME_RATE = 15.0


def object_heights(rng: np.random.Generator, count: int, size_exponent: float) -> np.ndarray:
    """``count`` heights in HEIGHTS drawn with a density proportional to height^-size_exponent
    (inverse transform sampling)."""
    low, high = HEIGHTS
    uniform = rng.random(count)
    if size_exponent == 1:
        return np.rint(low * (high / low) ** uniform).astype(np.int64)
    power = 1 - size_exponent
    return np.rint((low ** power + uniform * (high ** power - low ** power)) ** (1 / power)).astype(np.int64)


def moving_ellipses(count: int, image_size: tuple[int, int], size_exponent: float,
                    seed: int) -> Iterator[list[Instance]]:
    """Endless frames of ``count`` elliptic objects moving at constant velocity, bouncing off the
    image's edges."""
    rng = np.random.default_rng(seed)
    height, width = image_size
    heights = np.minimum(object_heights(rng, count, size_exponent), height - 1)
    widths = np.minimum((heights * rng.uniform(*ASPECTS, count)).astype(np.int64), width - 1)
    masks = []
    for mask_height, mask_width in zip(heights.tolist(), widths.tolist()):
        mask = np.zeros((mask_height, mask_width), np.uint8)
        cv2.ellipse(mask, (mask_width // 2, mask_height // 2), (mask_width // 2, mask_height // 2), 0, 0, 360, 1,
                    cv2.FILLED)
        masks.append(mask.astype(bool))
    class_ids = rng.choice(len(CLASS_SHARES), count, p=CLASS_SHARES)
    corners = np.column_stack([rng.integers(0, width - widths), rng.integers(0, height - heights)])
    velocities = rng.integers(-MAX_SPEED, MAX_SPEED + 1, (count, 2))
    limits = np.column_stack([width - widths, height - heights])
    while True:
        scores = rng.uniform(0.3, 1.0, count)
        yield [Instance(class_id=int(class_id), class_name=str(class_id), score=float(score),
                        box=(float(x), float(y), float(x + mask_width), float(y + mask_height)),
                        roi=(int(x), int(y), int(mask_width), int(mask_height)), mask=mask.copy())
               for class_id, score, (x, y), mask_width, mask_height, mask in
               zip(class_ids, scores, corners.tolist(), widths.tolist(), heights.tolist(), masks)]
        corners += velocities
        bounced = (corners < 0) | (corners > limits)
        velocities[bounced] *= -1
        corners = np.clip(corners, 0, limits)


def time_per_frame(settings: TrackerSettings, count: int, image_size: tuple[int, int], size_exponent: float,
                   frames: int, seed: int) -> tuple[list[float], int]:
    """Seconds of each timed ``update`` and the number of ids given."""
    tracker = MaskTracker(settings)
    timings = []
    scene = moving_ellipses(count, image_size, size_exponent, seed)
    for index, instances in zip(range(WARMUP_FRAMES + frames), scene):
        started = time.perf_counter()
        tracker.update(instances, index / FRAME_RATE)
        if index >= WARMUP_FRAMES:
            timings.append(time.perf_counter() - started)
    return timings, tracker.ids_given


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=200, help='timed frames (after 10 frames of warm-up)')
    parser.add_argument('--instances', type=int, default=50)
    parser.add_argument('--size', type=int, nargs=2, default=(1024, 2048), metavar=('HEIGHT', 'WIDTH'))
    parser.add_argument('--size-exponent', type=float, default=2.0,
                        help='object heights have a density proportional to height^-EXPONENT (1: log-uniform)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    image_size = tuple(args.size)
    first_frame = next(moving_ellipses(args.instances, image_size, args.size_exponent, args.seed))
    covered = sum(instance.mask.size for instance in first_frame) / (image_size[0] * image_size[1])
    print(f'tracker time per frame, {args.instances} moving instances at {image_size[0]}x{image_size[1]} '
          f'(their boxes add up to {covered:.0%} of the frame), median of {args.frames} frames (CPU):')
    print(f'  {"similarity":<10} {"median ms":>10} {"p95 ms":>10} {"ids given":>10}')
    for similarity in ('mask', 'box'):
        timings, ids_given = time_per_frame(replace(TrackerSettings(), similarity=similarity), args.instances,
                                            image_size, args.size_exponent, args.frames, args.seed)
        print(f'  {similarity:<10} {np.median(timings) * 1000:>10.3f} {np.percentile(timings, 95) * 1000:>10.3f} '
              f'{ids_given:>10}')
    print(f'(ids given: {args.instances} where no track is ever lost; objects that turn back at the edges, small '
          'ones most, can lose theirs)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
