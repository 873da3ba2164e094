"""Mask R-CNN's post-processing against the model.

Mask R-CNN as deployed (median of 5 calls) against thresholding, pasting, cropping and the message
fill of its detections (median of ``--repeats``).
"""
from __future__ import annotations

import argparse

import numpy as np
from std_msgs.msg import Header

from seg_perception.messages.instances import instances_to_msg
from seg_perception.tools.benchmarks.common import add_frame_arguments, camera_frames, median_ms

# (width, height) of instances in a busy 1024x2048 Cityscapes frame, far pedestrians to a close car.
CITYSCAPES_BOX_SIZES = [(30, 70)] * 8 + [(90, 60)] * 6 + [(220, 140)] * 4 + [(520, 330)] * 2


def with_cityscapes_sized_boxes(outputs: dict[str, np.ndarray], count: int, scale: tuple[float, float]
                                ) -> dict[str, np.ndarray]:
    """The outputs with the first ``count`` boxes resized to CITYSCAPES_BOX_SIZES (cycled): untrained
    weights find small boxes, and pasting cost grows with box area."""
    outputs = {name: value.copy() for name, value in outputs.items()}
    rng = np.random.default_rng(0)
    for index in range(count):
        width, height = CITYSCAPES_BOX_SIZES[index % len(CITYSCAPES_BOX_SIZES)]
        x, y = rng.uniform(0, 2048 - width), rng.uniform(0, 1024 - height)
        outputs['boxes'][0, index] = np.array([x, y, x + width, y + height]) * np.array(scale * 2)
    return outputs


MODEL_REPEATS = 5  # Mask R-CNN calls timed for the model's median (seconds each on a CPU)


def instance_postprocess_share(frame: np.ndarray, instances: int, checkpoint: str, repeats: int
                               ) -> tuple[float, str, dict[str, tuple[float, int, float]]]:
    """Model ms (median of MODEL_REPEATS backend calls), the backend, and per box population (the
    model's own boxes; Cityscapes-sized boxes) the post-processing ms (median of ``repeats``),
    instances kept and mean box area: Mask R-CNN as deployed (config/driving.yaml; every detection
    kept up to ``instances``) on a camera frame of the frame's size, the backend call vs
    thresholding, pasting, cropping and filling the message for the detections of that call."""
    from seg_perception.evaluation.fleet_worker import FleetModel

    overrides = ('score_threshold:=0.0', f'max_instances:={instances}') + \
        ((f'checkpoint:={checkpoint}',) if checkpoint else ())
    segmenter = FleetModel(tasks=('instance',), overrides=overrides).segmenter('instance')
    segmenter.infer_raw([frame])  # warm-up
    model_ms = median_ms(lambda: segmenter.infer_raw([frame]), MODEL_REPEATS)
    outputs = segmenter.infer_raw([frame])
    height, width = segmenter.transform.input_size_for(frame.shape[:2])  # boxes come in network pixels

    def postprocess(raw):
        result = segmenter.results(raw, [frame])[0]
        return instances_to_msg(result, Header(frame_id='camera'), segmenter.label_set.name), result

    populations = {'model boxes': outputs, 'Cityscapes-sized boxes': with_cityscapes_sized_boxes(
        outputs, instances, (width / 2048, height / 1024))}
    rows = {}
    for name, raw in populations.items():
        _, result = postprocess(raw)
        areas = [roi[2] * roi[3] for roi in (instance.roi for instance in result.instances)]
        rows[name] = (median_ms(lambda: postprocess(raw), repeats), len(result.instances),
                      float(np.mean(areas or [0])))
    return model_ms, segmenter.backend.describe(), rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_frame_arguments(parser, size=(1024, 2048))
    parser.add_argument('--instances', type=int, default=50, help='detections kept')
    parser.add_argument('--checkpoint', default='', help='Mask R-CNN weights (default: untrained, same speed)')
    parser.add_argument('--repeats', type=int, default=20, help='post-processing timings')


def run(args: argparse.Namespace) -> None:
    height, width = args.size
    frame = camera_frames(args.source, 1, height, width)[0]
    model_ms, backend, rows = instance_postprocess_share(frame, args.instances, args.checkpoint, args.repeats)
    print(f'Mask R-CNN as deployed (config/driving.yaml), {width}x{height} camera, {backend}: model (backend '
          f'call) median of {MODEL_REPEATS} {model_ms:.1f} ms')
    print('post-processing = threshold, paste, crop, message fill; median of', args.repeats)
    for name, (post_ms, kept, area) in rows.items():
        print(f'  {name:<24} {kept:3d} instances, mean box {area:7.0f} px: {post_ms:7.1f} ms = '
              f'{post_ms / model_ms:6.1%} of the model time (target <= 10%)')
