"""N cameras into one semantic node against N single-camera nodes.

1, 2 and 4 cameras at 30 Hz (best effort, as live cameras publish) feed one semantic node serving
all of them and, in the same run, as many single-camera nodes; printed are the outputs per second
of all cameras together, each camera's latency (stamp -> output received) p50/p95, the resident
memory of the node processes, and the ratios.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.bringup.driving_pipeline import pipeline_node
from seg_perception.bringup.processes import NodeProcesses, node_command, spin_until
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.topics import (OUTPUT_QOS, SEMANTIC_NODE, SEMANTIC_OUTPUT, camera_output_topic,
                                            stamp_latency_ms)
from seg_perception.tools.benchmarks.common import (CAMERA_RATE_HZ, add_dds_argument, add_frame_arguments,
                                                    add_input_size_argument, camera_frames, rss_mb, use_dds_profile)

CAMERA_COUNTS = (1, 2, 4)


@dataclass(frozen=True)
class CameraLoadResult:
    """What N cameras at 30 Hz got from one setup of semantic nodes."""

    output_fps: float  # outputs per second, all cameras together
    latencies_ms: dict[str, tuple[float, float]]  # camera -> (p50, p95), stamp -> output received
    rss_mb: float  # resident memory of every node process together


class CameraLoad(Node):
    """Publishes one frame on every camera at 30 Hz and times each camera's outputs."""

    def __init__(self, cameras: list[str], msg: Image) -> None:
        super().__init__('camera_benchmark')
        self.msg = msg
        self.publishers_ = [self.create_publisher(Image, camera, qos_profile_sensor_data) for camera in cameras]
        self.latencies_ms: dict[str, list[float]] = {camera: [] for camera in cameras}
        self.counting = False
        for camera in cameras:
            self.create_subscription(Image, camera_output_topic(camera, SEMANTIC_NODE, SEMANTIC_OUTPUT),
                                     lambda msg, camera=camera: self._on_labels(camera, msg), OUTPUT_QOS)
        self.timer = self.create_timer(1.0 / CAMERA_RATE_HZ, self._publish)

    def _publish(self) -> None:
        self.msg.header.stamp = self.get_clock().now().to_msg()
        for publisher in self.publishers_:
            publisher.publish(self.msg)

    def _on_labels(self, camera: str, msg: Image) -> None:
        if self.counting:
            self.latencies_ms[camera].append(stamp_latency_ms(self.get_clock().now().nanoseconds, msg.header.stamp))


def camera_load(frame: np.ndarray, groups: list[list[str]], max_batch: Optional[int], overrides: list[str],
                warmup_sec: float, window_sec: float) -> CameraLoadResult:
    """Every camera at 30 Hz, one semantic node per group of cameras (``max_batch``: None, the
    group's size)."""
    commands = [node_command(pipeline_node('semantic'), group[0], overrides=overrides + [
        f'cameras:=[{", ".join(group)}]', f'max_batch:={max_batch or len(group)}'], name=f'{SEMANTIC_NODE}_{index}')
        for index, group in enumerate(groups)]
    cameras = [camera for group in groups for camera in group]
    probe = CameraLoad(cameras, array_to_image_msg(frame, 'rgb8', Header(frame_id='camera')))
    try:
        with NodeProcesses(commands) as processes:
            if not spin_until(probe, lambda: all(publisher.get_subscription_count() for publisher in
                                                 probe.publishers_), 300, processes.check_alive):
                raise TimeoutError('the nodes never subscribed to every camera')
            spin_until(probe, lambda: False, warmup_sec, processes.check_alive)
            probe.counting = True
            spin_until(probe, lambda: False, window_sec, processes.check_alive)
            probe.counting = False
            memory_mb = sum(rss_mb(process.pid) for process in processes.processes)
    finally:
        probe.destroy_node()
    outputs = sum(len(values) for values in probe.latencies_ms.values())
    latencies = {camera: (float(np.percentile(values, 50)), float(np.percentile(values, 95))) if values
                 else (float('nan'), float('nan')) for camera, values in probe.latencies_ms.items()}
    return CameraLoadResult(outputs / window_sec, latencies, memory_mb)


def camera_scaling(frame: np.ndarray, counts: tuple[int, ...], overrides: list[str], warmup_sec: float,
                   window_sec: float) -> None:
    """Print, for each camera count, one node serving every camera (one batch of all, and taking
    turns one frame per call) against one node per camera."""
    rclpy.init()
    try:
        for count in counts:
            cameras = [f'/benchmark/camera{index}/image_raw' for index in range(count)]
            setups = {f'1 node, batch {count}': ([cameras], None),
                      '1 node, batch 1 (turns)': ([cameras], 1),
                      f'{count} single-camera nodes': ([[camera] for camera in cameras], None)}
            results = {label: camera_load(frame, groups, max_batch, overrides, warmup_sec, window_sec)
                       for label, (groups, max_batch) in setups.items() if count > 1 or max_batch is None}
            for label, result in results.items():
                latency = ', '.join(f'{p50:.0f}/{p95:.0f}' for p50, p95 in result.latencies_ms.values())
                print(f'{count} cameras, {label:<24} {result.output_fps:5.2f} outputs/s  RSS {result.rss_mb:6.0f} MB  '
                      f'latency p50/p95 per camera (ms): {latency}')
            separate = results[f'{count} single-camera nodes']
            for label, result in results.items():
                if label.startswith('1 node'):
                    print(f'{count} cameras, {label} / single-camera nodes: throughput '
                          f'{result.output_fps / separate.output_fps:.2f} (goal >= 1), memory '
                          f'{result.rss_mb / separate.rss_mb:.2f} (goal at 4 cameras <= 0.35)')
    finally:
        rclpy.try_shutdown()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_frame_arguments(parser)
    parser.add_argument('--cameras', type=int, nargs='+', default=list(CAMERA_COUNTS), help='camera counts')
    add_input_size_argument(parser)
    parser.add_argument('--window', type=float, default=20.0, help='seconds measured per setup')
    parser.add_argument('--checkpoint', default='', help='semantic weights (default: untrained, same speed)')
    add_dds_argument(parser)


def run(args: argparse.Namespace) -> None:
    use_dds_profile(args)
    height, width = args.size
    frame = camera_frames(args.source, 1, height, width)[0]
    overrides = ['backend:=onnxruntime', f'input_height:={args.input_size[0]}',
                 f'input_width:={args.input_size[1]}'] + ([f'checkpoint:={args.checkpoint}'] if args.checkpoint else [])
    print(f'semantic segmentation, cameras at {CAMERA_RATE_HZ:.0f} Hz, {width}x{height} rgb8, network '
          f'{args.input_size[1]}x{args.input_size[0]}, ONNX Runtime, {os.cpu_count()} CPU cores')
    camera_scaling(frame, tuple(args.cameras), overrides, warmup_sec=5.0, window_sec=args.window)
