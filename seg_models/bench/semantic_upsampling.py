"""Class ids at the camera's size on the CPU, side by side in one run: the graph's ids at the
network's size resized by nearest neighbour (the CPU path until 2026-12-07), against the graph's
quarter-resolution logits upsampled bilinearly to the camera's size on the host before the argmax
(the CPU path now; the GPU path's answer).

    python -m seg_models.bench.semantic_upsampling --frames ../shared/data/camvid_seq05vd/images --size 1024 2048

Both run the same weights with ONNX Runtime on the CPU. Printed for each: the median time of
``SemanticSegmenter.segment`` for one frame, its backend call and the host's part, and the share of
pixels equal to the GPU path's answer (``SemanticInference.camera_forward``: logits upsampled to
the camera's size before the argmax, by PyTorch on the CPU; it resizes the frame to the network's
size in float where the CPU path rounds it to uint8, so a few pixels differ for that alone).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional

import cv2
import numpy as np
import torch

from seg_models.backends.factory import create_backend
from seg_models.bench.backend_comparison import bench_frames
from seg_models.checkpoints.model_card import resolved_semantic_config
from seg_models.configs import DEFAULT_INPUT_SIZE, SemanticModelConfig, build_config
from seg_models.data.labels import get_label_set
from seg_models.models.semantic_graph import SemanticInference
from seg_models.segmenters.semantic import SemanticSegmenter, build_semantic_network, semantic_deployment

VARIANTS = {'ids at the network size, nearest to the camera': False,
            'quarter logits, bilinear to the camera on the host': True}


def variant_segmenter(config: SemanticModelConfig, logits_on_host: bool) -> SemanticSegmenter:
    graph, label_set, weights = semantic_deployment(config, logits_on_host=logits_on_host)
    return SemanticSegmenter(create_backend(graph, config.deployment), label_set, config.input_size, weights,
                             config.output_filter)


def measure(segmenter: SemanticSegmenter, frames: list[np.ndarray], repeats: int) -> tuple[float, float, list]:
    """(median ms of one frame, median ms of its backend call, the last class ids of each frame)."""
    totals, backend, answers = [], [], []
    segmenter.segment(frames[:1])  # warm-up: first calls allocate
    for _ in range(repeats):
        answers = []
        for frame in frames:
            started = time.perf_counter()
            answers.append(segmenter.segment([frame])[0].class_ids)
            totals.append((time.perf_counter() - started) * 1e3)
            backend.append(segmenter.backend_time.ms)
    return statistics.median(totals), statistics.median(backend), answers


def gpu_path_answers(config: SemanticModelConfig, frames: list[np.ndarray]) -> list[np.ndarray]:
    """What the GPU path answers (camera_forward), computed by PyTorch on the CPU."""
    network, _ = build_semantic_network(config, get_label_set(config.label_set))
    graph = SemanticInference(network.eval())
    with torch.no_grad():
        return [graph.camera_forward(torch.from_numpy(frame)[None], config.input_size)[0][0].numpy()
                for frame in frames]


def run(frames_folder: Optional[str], size: tuple[int, int], input_size: tuple[int, int], checkpoint: str,
        architecture: Optional[str], label_set: Optional[str], count: int, repeats: int) -> None:
    config = resolved_semantic_config(build_config(SemanticModelConfig, dict(
        checkpoint=checkpoint, architecture=architecture, label_set=label_set, backend='onnxruntime', device='cpu'),
        input_size=input_size))
    frames = [cv2.resize(frame, size[::-1], interpolation=cv2.INTER_LINEAR) if frame.shape[:2] != size else frame
              for frame in bench_frames(frames_folder, size, count)]
    reference = gpu_path_answers(config, frames)
    results = {}
    for name, logits_on_host in VARIANTS.items():
        total, backend, answers = measure(variant_segmenter(config, logits_on_host), frames, repeats)
        agreement = float(np.mean([np.mean(a == b) for a, b in zip(answers, reference)]))
        results[name] = (total, backend, agreement)
    print(f'\n{len(frames)} frames of {size[1]}x{size[0]}, network {config.input_size[1]}x{config.input_size[0]}, '
          f'{config.architecture} ({config.label_set}), ONNX Runtime on the CPU, medians of {repeats} passes')
    print(f'  {"":<52} {"frame ms":>9} {"backend":>9} {"host":>8} {"= GPU path":>11}')
    for name, (total, backend, agreement) in results.items():
        print(f'  {name:<52} {total:9.1f} {backend:9.1f} {total - backend:8.1f} {100 * agreement:10.2f}%')
    (old, _, _), (new, _, _) = results.values()
    print(f'  frame time, host logits / graph ids: {new / old:.3f}')


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--frames', help='folder of camera frames (default: random frames)')
    parser.add_argument('--size', type=int, nargs=2, default=(1024, 2048), metavar=('HEIGHT', 'WIDTH'),
                        help='camera size the frames are resized to')
    parser.add_argument('--input-size', type=int, nargs=2, default=DEFAULT_INPUT_SIZE, metavar=('HEIGHT', 'WIDTH'))
    parser.add_argument('--checkpoint', default='', help='weights (default: the demo model, or untrained weights)')
    parser.add_argument('--architecture')
    parser.add_argument('--label-set')
    parser.add_argument('--count', type=int, default=5, help='frames')
    parser.add_argument('--repeats', type=int, default=3, help='passes over the frames')
    args = parser.parse_args(argv)
    run(args.frames, tuple(args.size), tuple(args.input_size), args.checkpoint, args.architecture, args.label_set,
        args.count, args.repeats)


if __name__ == '__main__':
    main()
