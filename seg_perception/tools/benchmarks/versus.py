"""Our node against a plain callback node, side by side in one run, same network, weights and frames.

    python -m seg_perception.tools.benchmarks versus semantic --seconds 60 --source ../shared/data/camvid_seq05vd/images
    python -m seg_perception.tools.benchmarks versus instance --seconds 60 --source ../shared/data/camvid_seq05vd/images

The plain node (seg_perception/tools/plain_node.py) is what community nodes do: the model in the
subscription callback, PyTorch eager, rclpy's default depth-10 queue, full-frame mask images for
instances. Each node runs alone in its own process (one after the other, so neither takes the
other's cores), fed by a camera in this process (reliable, depth 10, which both subscriptions
accept) at the frames' size. Printed for each, and the ratios:

* one frame, end to end: image published -> answer received, one frame at a time (median);
* a 30 Hz camera for ``--seconds``: answers per second, latency (image stamp -> answer received)
  p50/p95 in the first and the last 10 s, and after the camera stops, how many answers still come
  and how late the last one is (stale answers: a queue of frames the node works through);
* resident memory of the node process: the median of one sample a second over the stream (one
  sample swings by 100 MB with the allocator's state) and its peak; the bytes of one answer.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.bringup.driving_pipeline import TASKS, pipeline_node
from seg_perception.bringup.processes import NodeProcesses, node_command, spin_until
from seg_perception.messages.dds_profile import LOCALHOST_PROFILE, use_large_images_profile
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.topics import in_root_namespace, stamp_key, stamp_latency_ms
from seg_perception.tools.benchmarks.common import (CAMERA_RATE_HZ, add_frame_arguments, add_input_size_argument,
                                                    camera_frames, rss_mb)

CAMERA = '/versus/camera/image_raw'
CAMERA_QOS = QoSProfile(depth=10)  # reliable: what both a best-effort and a reliable subscription accept
START_TIMEOUT_SEC = 300.0
ANSWER_TIMEOUT_SEC = 120.0
WINDOW_SEC = 10.0  # the first and the last seconds of the stream whose latencies are compared
DRAIN_QUIET_SEC = 10.0  # after the camera stops: answers are awaited until none came for this long
ONE_FRAME_REPEATS = 5


@dataclass(frozen=True)
class Measurement:
    one_frame_ms: float
    answers_per_sec: float
    first_latency_ms: tuple[float, float]  # p50, p95 in the stream's first WINDOW_SEC
    last_latency_ms: tuple[float, float]  # ... and its last
    late_answers: int  # answers received after the camera stopped
    last_late_ms: float  # how long after the camera stopped the last answer came (0: none)
    rss_mb: float  # median over the stream
    peak_rss_mb: float  # the process's highest, start included
    answer_bytes: int
    instances_per_answer: float  # median (instance task; 0 for semantic)


class Camera(Node):
    """Publishes frames and records every answer: when it came, its latency, its size."""

    def __init__(self, frames: list[np.ndarray], output: str, answer_type: type) -> None:
        super().__init__('versus_camera')
        self.messages = [array_to_image_msg(frame, 'rgb8', Header(frame_id='camera')) for frame in frames]
        self.publisher = self.create_publisher(Image, CAMERA, CAMERA_QOS)
        self.answers: list[tuple[float, Optional[float]]] = []  # (monotonic time received, latency ms)
        self.answered: set[tuple[int, int]] = set()
        self.answer_bytes: list[int] = []
        self.instance_counts: list[int] = []
        self.create_subscription(answer_type, output, self._on_answer, CAMERA_QOS)
        self._next = 0

    def publish_next(self) -> tuple[int, int]:
        msg = self.messages[self._next % len(self.messages)]
        self._next += 1
        msg.header.stamp = self.get_clock().now().to_msg()
        self.publisher.publish(msg)
        return stamp_key(msg.header)

    def _on_answer(self, msg) -> None:
        self.answers.append((time.monotonic(), stamp_latency_ms(self.get_clock().now().nanoseconds, msg.header.stamp)))
        self.answered.add(stamp_key(msg.header))
        if len(self.answer_bytes) < 20:
            self.answer_bytes.append(len(serialize_message(msg)))
        self.instance_counts.append(len(getattr(msg, 'instances', ())))


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float('nan'), float('nan')
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))


def measure(command: list[str], frames: list[np.ndarray], task: str, seconds: float) -> Measurement:
    """Start the node of ``command``, and measure it as the module docstring says."""
    node = pipeline_node(task)
    camera = Camera(frames, in_root_namespace(node.output), node.node_type().processor_type.answer_type)
    try:
        with NodeProcesses([command]) as processes:
            check = processes.check_alive
            if not spin_until(camera, lambda: camera.publisher.get_subscription_count() > 0, START_TIMEOUT_SEC,
                              check):
                raise TimeoutError(f'the node never subscribed to {CAMERA}: {" ".join(command)}')

            def one_frame() -> float:
                started = time.monotonic()
                key = camera.publish_next()
                if not spin_until(camera, lambda: key in camera.answered, ANSWER_TIMEOUT_SEC, check):
                    raise TimeoutError(f'no answer within {ANSWER_TIMEOUT_SEC:.0f} s: {" ".join(command)}')
                return (time.monotonic() - started) * 1e3

            for _ in range(2):  # warm-up: first calls allocate
                one_frame()
            one_frame_ms = statistics.median(one_frame() for _ in range(ONE_FRAME_REPEATS))
            camera.answers.clear()
            started = time.monotonic()
            pid = processes.processes[0].pid
            memory: list[float] = []
            timers = [camera.create_timer(1.0 / CAMERA_RATE_HZ, camera.publish_next),
                      camera.create_timer(1.0, lambda: memory.append(rss_mb(pid)))]
            spin_until(camera, lambda: time.monotonic() - started > seconds, seconds + 5.0, check)
            for timer in timers:
                camera.destroy_timer(timer)
            stopped = time.monotonic()
            memory = memory or [rss_mb(pid)]  # a stream shorter than a second
            peak_memory = rss_mb(pid, 'VmHWM')
            spin_until(camera, lambda: time.monotonic() - max([stopped] + [t for t, _ in camera.answers])
                       > DRAIN_QUIET_SEC, 600.0, check)
    finally:
        camera.destroy_node()
    streamed = [(received, latency) for received, latency in camera.answers if received <= stopped]
    late = [received - stopped for received, _ in camera.answers if received > stopped]
    first = [latency for received, latency in streamed if received - started <= WINDOW_SEC and latency is not None]
    last = [latency for received, latency in streamed if stopped - received <= WINDOW_SEC and latency is not None]
    return Measurement(one_frame_ms, len(streamed) / (stopped - started), _percentiles(first), _percentiles(last),
                       len(late), max(late, default=0.0) * 1e3, statistics.median(memory), peak_memory,
                       int(statistics.median(camera.answer_bytes)),
                       float(statistics.median(camera.instance_counts)))


def commands(task: str, checkpoint: str, input_size: tuple[int, int], score_threshold: Optional[float] = None
             ) -> dict[str, list[str]]:
    """Our node (as the driving pipeline starts it) and the plain node, with the same weights, input
    size and (instances) score threshold."""
    shared = [f'input_height:={input_size[0]}', f'input_width:={input_size[1]}'] + (
        [f'checkpoint:={checkpoint}'] if checkpoint else []) + (
        [f'score_threshold:={score_threshold}'] if task == 'instance' and score_threshold is not None else [])
    plain = [sys.executable, '-m', 'seg_perception.tools.plain_node', '--ros-args', '-r', f'image:={CAMERA}',
             '-p', f'task:={task}'] + [arg for value in shared for arg in ('-p', value)]
    return {'ours': node_command(pipeline_node(task), CAMERA, overrides=shared), 'plain': plain}


def report(task: str, results: dict[str, Measurement], frame_size: tuple[int, int], seconds: float) -> None:
    ours, plain = results['ours'], results['plain']
    height, width = frame_size
    print(f'\n{task}: our node vs a plain callback node, {width}x{height} rgb8 frames, {seconds:.0f} s at '
          f'{CAMERA_RATE_HZ:.0f} Hz, {os.cpu_count()} CPU cores')
    rows = [
        ('one frame, end to end (ms)', ours.one_frame_ms, plain.one_frame_ms, plain.one_frame_ms / ours.one_frame_ms,
         'x faster'),
        ('answers per second', ours.answers_per_sec, plain.answers_per_sec,
         ours.answers_per_sec / plain.answers_per_sec, 'x throughput'),
        (f'latency p50, first {WINDOW_SEC:.0f} s (ms)', ours.first_latency_ms[0], plain.first_latency_ms[0], None, ''),
        (f'latency p95, first {WINDOW_SEC:.0f} s (ms)', ours.first_latency_ms[1], plain.first_latency_ms[1], None, ''),
        (f'latency p50, last {WINDOW_SEC:.0f} s (ms)', ours.last_latency_ms[0], plain.last_latency_ms[0],
         plain.last_latency_ms[0] / ours.last_latency_ms[0], 'x lower'),
        (f'latency p95, last {WINDOW_SEC:.0f} s (ms)', ours.last_latency_ms[1], plain.last_latency_ms[1],
         plain.last_latency_ms[1] / ours.last_latency_ms[1], 'x lower'),
        ('answers after the camera stopped', ours.late_answers, plain.late_answers, None, ''),
        ('last of them, after the stop (ms)', ours.last_late_ms, plain.last_late_ms, None, ''),
        ('resident memory, median (MB)', ours.rss_mb, plain.rss_mb, ours.rss_mb / plain.rss_mb, 'x (ours / plain)'),
        ('resident memory, peak (MB)', ours.peak_rss_mb, plain.peak_rss_mb, ours.peak_rss_mb / plain.peak_rss_mb,
         'x (ours / plain)'),
        ('bytes per answer', ours.answer_bytes, plain.answer_bytes, plain.answer_bytes / max(ours.answer_bytes, 1),
         'x smaller'),
    ] + ([('instances per answer (median)', ours.instances_per_answer, plain.instances_per_answer, None, '')]
         if task == 'instance' else [])
    print(f'  {"":<36} {"ours":>10} {"plain":>10}')
    for label, mine, theirs, ratio, words in rows:
        ratio_text = f'  ours {ratio:.2f}{words}' if ratio is not None else ''
        print(f'  {label:<36} {mine:10.1f} {theirs:10.1f}{ratio_text}')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('task', choices=TASKS)
    add_frame_arguments(parser)
    add_input_size_argument(parser)
    parser.add_argument('--seconds', type=float, default=60.0, help='length of the 30 Hz stream')
    parser.add_argument('--frames', type=int, default=10, help='distinct camera frames, sent in turn')
    parser.add_argument('--checkpoint', default='', help='weights for both nodes (default: the same untrained ones)')
    parser.add_argument('--score-threshold', type=float, default=None,
                        help='instance: both nodes publish detections at or above this score (default: their 0.5); '
                             'untrained weights score nearly every box high, so this sets how many instances a '
                             'frame has')


def run(args: argparse.Namespace) -> None:
    use_large_images_profile(os.environ, LOCALHOST_PROFILE)
    frames = camera_frames(args.source, args.frames, *args.size)
    rclpy.init()
    try:
        results = {name: measure(command, frames, args.task, args.seconds)
                   for name, command in commands(args.task, args.checkpoint, tuple(args.input_size),
                                                 args.score_threshold).items()}
    finally:
        rclpy.try_shutdown()
    report(args.task, results, tuple(args.size), args.seconds)
