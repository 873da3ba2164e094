"""The semantic node end to end against the backend call it timed itself.

The semantic node starts as deployed (its own process, as launch does, with config/driving.yaml)
and gets one camera frame at a time: image published -> class-id image received, against the
backend call the node timed for that very frame in its own process (FrameTiming.backend_ms);
medians. Their ratio is what the node costs on top of the network; the rest is split into the
camera message's delivery, queue, conversion, resizing / upsampling / argmax, publishing and the
class-id image's delivery. ``--size 2160 3840`` with ``--transport compressed`` or
``--default-dds`` shows what a 4K camera's message costs and what helps.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile
from seg_perception_msgs.msg import FrameTiming
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.bringup.driving_pipeline import CONFIG_PATH, pipeline_node
from seg_perception.bringup.processes import NodeProcesses, node_command, spin_until
from seg_perception.messages.images import rgb_to_camera_msg
from seg_perception.messages.topics import (COMPRESSED_SUFFIX, OUTPUT_QOS, PROCESSING_TIME_OUTPUT, SEMANTIC_NODE,
                                            SEMANTIC_PREDICTION, TRANSPORT_CHOICES, private_topic, stamp_key)
from seg_perception.package_share import data_path
from seg_perception.tools.benchmarks.common import (add_dds_argument, add_frame_arguments, camera_frames,
                                                    use_dds_profile)

CAMERA_TOPIC = '/benchmark/image_raw'


class LatencyProbe(Node):
    """Publishes one camera frame at a time and waits for its class-id image; keeps the node's own
    FrameTiming of every frame and its backend from /diagnostics."""

    def __init__(self, transport: str, publisher_depth: int) -> None:
        super().__init__('latency_benchmark')
        message_type, topic = (CompressedImage, CAMERA_TOPIC + COMPRESSED_SUFFIX) if transport == 'compressed' \
            else (Image, CAMERA_TOPIC)
        self.camera = self.create_publisher(message_type, topic, QoSProfile(depth=publisher_depth))
        self.arrivals: dict[tuple[int, int], float] = {}
        self.timings: dict[tuple[int, int], FrameTiming] = {}
        self.backend = ''
        self.node_counts: dict[str, str] = {}  # the camera's counters in the node's /diagnostics
        self.create_subscription(Image, SEMANTIC_PREDICTION, self._on_labels, OUTPUT_QOS)
        self.create_subscription(FrameTiming, private_topic(SEMANTIC_NODE, PROCESSING_TIME_OUTPUT),
                                 lambda msg: self.timings.__setitem__(stamp_key(msg.header), msg), OUTPUT_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_labels(self, msg: Image) -> None:
        self.arrivals[stamp_key(msg.header)] = time.perf_counter()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {entry.key: entry.value for entry in status.values}
            if 'backend' in values:
                self.backend = f'{values["backend"]} on {values.get("device", "?")} ({values.get("precision", "?")})'
            if 'frames received' in values:
                self.node_counts = {name: values[name] for name in NODE_COUNTS if name in values}

    def round_trip(self, msg, processes: NodeProcesses, timeout: float) -> Optional[tuple[float, FrameTiming]]:
        """(published -> class-id image received in ms, the node's timing of it); None when no
        answer came within ``timeout`` (a frame lost on the way)."""
        msg.header.stamp = self.get_clock().now().to_msg()
        key = stamp_key(msg.header)
        started = time.perf_counter()
        self.camera.publish(msg)
        if not spin_until(self, lambda: key in self.arrivals and key in self.timings, timeout,
                          processes.check_alive):
            return None
        return (self.arrivals.pop(key) - started) * 1e3, self.timings.pop(key)


NODE_COUNTS = ('frames received', 'frames published', 'frames dropped', 'frames lost before the node')


@dataclass(frozen=True)
class NodeLatency:
    """One latency run: per answered frame its round trip and the node's own timing of it."""

    round_trips_ms: list[float]
    timings: list[FrameTiming]
    lost: int  # frames sent that never came back
    backend: str
    node_counts: dict[str, str]  # what the node counted (NODE_COUNTS), warm-up frames included


def node_latency(frames: list[np.ndarray], checkpoint: str, warmup: int, transport: str,
                 answer_timeout: float, publisher_depth: int, params: Sequence[str] = ()) -> NodeLatency:
    """The semantic node as deployed (config/driving.yaml; only the checkpoint, the transport and
    ``params``, NAME:=VALUE, overridden), one frame at a time: image published -> class-id image
    received, and the node's FrameTiming of that frame (its backend call timed in its own process)."""
    overrides = [f'input_transport:={transport}', *params] + ([f'checkpoint:={checkpoint}'] if checkpoint else [])
    rclpy.init()
    probe = LatencyProbe(transport, publisher_depth)
    round_trips, timings, lost = [], [], 0
    try:
        command = node_command(pipeline_node('semantic'), CAMERA_TOPIC, config=data_path(CONFIG_PATH),
                               overrides=overrides)
        with NodeProcesses([command]) as processes:
            if not spin_until(probe, lambda: probe.camera.get_subscription_count() > 0, 300, processes.check_alive):
                raise TimeoutError('the node never subscribed to the camera')
            compression = 'jpeg' if transport == 'compressed' else 'none'
            messages = [rgb_to_camera_msg(frame, Header(frame_id='camera'), compression) for frame in frames]
            for index in range(warmup + len(frames)):
                answer = probe.round_trip(messages[index % len(messages)], processes, answer_timeout)
                if index < warmup:
                    continue
                if answer is None:
                    lost += 1
                else:
                    round_trips.append(answer[0])
                    timings.append(answer[1])
    finally:
        probe.destroy_node()
        rclpy.try_shutdown()
    return NodeLatency(round_trips, timings, lost, probe.backend, probe.node_counts)


def print_node_latency(run: NodeLatency, size: tuple[int, int], setup: str) -> None:
    """Medians over the answered frames; where the time outside the backend call went."""
    def median(values) -> float:
        return statistics.median(values) if values else math.nan

    timings = run.timings
    outside = {
        'camera message delivery': [t.latency_ms - t.queue_ms - t.conversion_ms - t.inference_ms - t.publish_ms
                                    for t in timings],
        'queue': [t.queue_ms for t in timings],
        'conversion': [t.conversion_ms for t in timings],
        'resize, upsampling, argmax': [t.inference_ms - t.backend_ms for t in timings],
        'publish': [t.publish_ms for t in timings],
        'class-id image delivery': [trip - t.latency_ms for trip, t in zip(run.round_trips_ms, timings)]}
    node_ms, backend_ms = median(run.round_trips_ms), median([t.backend_ms for t in timings])
    height, width = size
    print(f'semantic node as deployed (config/driving.yaml), {width}x{height} camera, {setup}, '
          f'{len(timings)} of {len(timings) + run.lost} frames answered, {run.backend}')
    print(f'node end to end      median {node_ms:8.1f} ms   (image published -> class-id image received)')
    print(f'backend call         median {backend_ms:8.1f} ms   (the network alone, timed in the node process)')
    print(f'ratio node / backend        {node_ms / backend_ms:8.3f}   (target <= 1.10 for cameras up to 2048x1024)')
    print('outside the backend call (medians, ms): ' + ', '.join(
        f'{stage} {median(values):.1f}' for stage, values in outside.items()))
    print('the node counted (warm-up included): ' + ', '.join(
        f'{name} {value}' for name, value in run.node_counts.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_frame_arguments(parser)
    parser.add_argument('--frames', type=int, default=10, help='frames timed (after warm-up)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--checkpoint', default='', help='semantic weights (default: untrained, same speed)')
    parser.add_argument('--transport', choices=TRANSPORT_CHOICES, default='raw',
                        help='camera frames as rgb8 Images or JPEG CompressedImages')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='a node parameter over config/driving.yaml, e.g. input_reliability:=reliable')
    parser.add_argument('--publisher-depth', type=int, default=5,
                        help='history depth of the camera publisher (5: rclpy sensor data QoS)')
    parser.add_argument('--answer-timeout', type=float, default=30.0,
                        help='seconds after which a frame counts as lost')
    add_dds_argument(parser)


def run(args: argparse.Namespace) -> None:
    use_dds_profile(args)
    frames = camera_frames(args.source, args.frames, *args.size)
    latency = node_latency(frames, args.checkpoint, args.warmup, args.transport, args.answer_timeout,
                           args.publisher_depth, args.param)
    dds = 'Fast DDS defaults' if args.default_dds else 'large-message DDS profile'
    setup = f'{args.transport} transport, camera publisher history depth {args.publisher_depth}, {dds}'
    print_node_latency(latency, tuple(args.size), setup + ''.join(', ' + param for param in args.param))
