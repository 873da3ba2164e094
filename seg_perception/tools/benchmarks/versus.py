"""Our node against a plain callback node, side by side in one run, same network, weights and frames.

    python -m seg_perception.tools.benchmarks versus semantic --seconds 60 --source ../shared/data/camvid_seq05vd/images
    python -m seg_perception.tools.benchmarks versus instance --seconds 60 --source ../shared/data/camvid_seq05vd/images
    python -m seg_perception.tools.benchmarks versus yolo --seconds 60 --source ../shared/data/camvid_seq05vd/images

The plain node (seg_perception/tools/plain_node.py) is what community nodes do: the model in the
subscription callback, PyTorch eager, rclpy's default depth-10 queue, full-frame mask images for
instances. ``yolo`` puts our instance node, running a YOLO-seg ONNX through ``model_metadata``,
against a yolo_ros-style node on the same ONNX file (test/yolo_ros_style_node.py: Ultralytics'
``predict`` in the callback, a best-effort depth-1 subscription, masks as polygons; it lives in
test/ because Ultralytics, AGPL-3.0, is a test-only dependency, so it needs the checkout and
Ultralytics installed). Each node runs alone in its own process (one after the other, so neither
takes the other's cores), fed by a camera in this process (reliable, depth 10, which every
subscription accepts) at the frames' size. Printed for each, and the ratios:

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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import serialize_message
from seg_perception_msgs.msg import InstanceMaskArray
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.bringup.driving_pipeline import TASKS, pipeline_node
from seg_perception.bringup.processes import NodeProcesses, node_command, spin_until
from seg_perception.messages.dds_profile import LOCALHOST_PROFILE, use_large_images_profile
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.topics import in_root_namespace, stamp_key, stamp_latency_ms
from seg_perception.package_share import SOURCE_ROOT
from seg_perception.tools.benchmarks.common import (CAMERA_RATE_HZ, add_frame_arguments, add_input_size_argument,
                                                    camera_frames, rss_mb)

CAMERA = '/versus/camera/image_raw'
CAMERA_QOS = QoSProfile(depth=10)  # reliable: what both a best-effort and a reliable subscription accept
START_TIMEOUT_SEC = 300.0
ANSWER_TIMEOUT_SEC = 120.0
WINDOW_SEC = 10.0  # the first and the last seconds of the stream whose latencies are compared
DRAIN_QUIET_SEC = 10.0  # after the camera stops: answers are awaited until none came for this long
ONE_FRAME_REPEATS = 5
FIRST_FRAME_RESEND_SEC = 2.0
YOLO = 'yolo'  # our instance node on a YOLO-seg ONNX against the yolo_ros-style node
YOLO_ROS_STYLE_NODE = SOURCE_ROOT / 'test' / 'yolo_ros_style_node.py'
YOLO_ROS_DETECTIONS = '/detections'
# yolo_ros's launch defaults (yolo_bringup/launch/yolo.launch.py): threshold 0.5, iou 0.7 (the
# metadata's nms_iou, our default too), max_det 300; imgsz is the export's, 640x640 by default
YOLO_ROS_THRESHOLD = 0.5
YOLO_ROS_MAX_DET = 300
YOLO_EXPORT_SIZE = (640, 640)


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


@dataclass(frozen=True)
class Contender:
    """One side of the comparison: its command line, and where and in what it answers."""

    command: list[str]
    output: str  # its answer topic, in the root namespace
    answer_type: type


class Camera(Node):
    """Publishes frames and records every answer: when it came, its latency, its size."""

    def __init__(self, frames: list[np.ndarray], contender: Contender) -> None:
        super().__init__('versus_camera')
        self.messages = [array_to_image_msg(frame, 'rgb8', Header(frame_id='camera')) for frame in frames]
        self.publisher = self.create_publisher(Image, CAMERA, CAMERA_QOS)
        self.answers: list[tuple[float, Optional[float]]] = []  # (monotonic time received, latency ms)
        self.answered: set[tuple[int, int]] = set()
        self.answer_bytes: list[int] = []
        self.instance_counts: list[int] = []
        self.create_subscription(contender.answer_type, contender.output, self._on_answer, CAMERA_QOS)
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


def measure(contender: Contender, frames: list[np.ndarray], seconds: float) -> Measurement:
    """Start the node of ``contender``, and measure it as the module docstring says."""
    command = contender.command
    camera = Camera(frames, contender)
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

            # Warm-up (first calls allocate). The first frame goes again until one is answered: a
            # best-effort subscription (yolo_ros's) drops frames sent before its own side of the match
            # is made, which the camera cannot see. A frame still queued then is answered in the second.
            deadline = time.monotonic() + ANSWER_TIMEOUT_SEC
            camera.publish_next()
            while not spin_until(camera, lambda: bool(camera.answered), FIRST_FRAME_RESEND_SEC, check):
                if time.monotonic() > deadline:
                    raise TimeoutError(f'no answer within {ANSWER_TIMEOUT_SEC:.0f} s: {" ".join(command)}')
                camera.publish_next()
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


def our_node(task: str, overrides: list[str]) -> Contender:
    """Our node of ``task`` as the driving pipeline starts it."""
    node = pipeline_node(task)
    return Contender(node_command(node, CAMERA, overrides=overrides), in_root_namespace(node.output),
                     node.node_type().processor_type.answer_type)


def commands(task: str, checkpoint: str, input_size: tuple[int, int], score_threshold: Optional[float] = None
             ) -> dict[str, Contender]:
    """Our node and the plain node, with the same weights, input size and (instances) score threshold."""
    shared = [f'input_height:={input_size[0]}', f'input_width:={input_size[1]}'] + (
        [f'checkpoint:={checkpoint}'] if checkpoint else []) + (
        [f'score_threshold:={score_threshold}'] if task == 'instance' and score_threshold is not None else [])
    plain = [sys.executable, '-m', 'seg_perception.tools.plain_node', '--ros-args', '-r', f'image:={CAMERA}',
             '-p', f'task:={task}'] + [arg for value in shared for arg in ('-p', value)]
    mine = our_node(task, shared)
    return {'ours': mine, 'plain': Contender(plain, mine.output, mine.answer_type)}


def yolo_commands(model_metadata: Path, score_threshold: Optional[float]) -> dict[str, Contender]:
    """Our instance node on ``model_metadata`` and the yolo_ros-style node on the ONNX file it names,
    with the same score threshold, NMS IoU (the metadata's), input size (the export's) and at most
    yolo_ros's max_det detections."""
    from seg_models.segmenters.external_instance import load_instance_model

    spec = load_instance_model(model_metadata)
    threshold = YOLO_ROS_THRESHOLD if score_threshold is None else score_threshold
    # NumPy's own BLAS threads, as yolo_ros runs (importing seg_perception for its parameter table
    # would give it our one-thread setting)
    yolo_ros = ['env', f'OPENBLAS_NUM_THREADS={os.cpu_count()}', sys.executable, str(YOLO_ROS_STYLE_NODE),
                '--ros-args', '-r', f'image_raw:={CAMERA}',
                '-r', f'detections:={YOLO_ROS_DETECTIONS}'] + [arg for value in (
                    f'model:={spec.onnx}', f'threshold:={threshold}', f'iou:={spec.nms_iou}',
                    f'imgsz_height:={spec.input_size[0]}', f'imgsz_width:={spec.input_size[1]}',
                    f'max_det:={YOLO_ROS_MAX_DET}') for arg in ('-p', value)]
    return {'ours': our_node('instance', [f'model_metadata:={model_metadata}', f'score_threshold:={threshold}',
                                      f'max_instances:={YOLO_ROS_MAX_DET}']),
            'yolo_ros': Contender(yolo_ros, YOLO_ROS_DETECTIONS, InstanceMaskArray)}


def exported_yolo(folder: str) -> Path:
    """The fitted YOLO11n-seg of the tests exported by Ultralytics at yolo_ros's 640x640 into
    ``folder``: its metadata (Ultralytics only ever runs in that child process)."""
    done = subprocess.run([sys.executable, str(YOLO_ROS_STYLE_NODE), 'export', *map(str, YOLO_EXPORT_SIZE), folder],
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def _size_ratio(ours_bytes: float, theirs_bytes: float) -> tuple[float, str]:
    if theirs_bytes >= ours_bytes:
        return theirs_bytes / max(ours_bytes, 1), 'x smaller'
    return ours_bytes / max(theirs_bytes, 1), 'x larger'


def report(task: str, results: dict[str, Measurement], frame_size: tuple[int, int], seconds: float) -> None:
    (_, ours), (name, theirs) = results.items()
    height, width = frame_size
    against = 'a yolo_ros-style node (Ultralytics predict in the callback)' if task == YOLO else \
        'a plain callback node'
    print(f'\n{task}: our node vs {against}, {width}x{height} rgb8 frames, {seconds:.0f} s at '
          f'{CAMERA_RATE_HZ:.0f} Hz, {os.cpu_count()} CPU cores')
    rows = [
        ('one frame, end to end (ms)', ours.one_frame_ms, theirs.one_frame_ms, theirs.one_frame_ms / ours.one_frame_ms,
         'x faster'),
        ('answers per second', ours.answers_per_sec, theirs.answers_per_sec,
         ours.answers_per_sec / theirs.answers_per_sec, 'x throughput'),
        (f'latency p50, first {WINDOW_SEC:.0f} s (ms)', ours.first_latency_ms[0], theirs.first_latency_ms[0], None, ''),
        (f'latency p95, first {WINDOW_SEC:.0f} s (ms)', ours.first_latency_ms[1], theirs.first_latency_ms[1], None, ''),
        (f'latency p50, last {WINDOW_SEC:.0f} s (ms)', ours.last_latency_ms[0], theirs.last_latency_ms[0],
         theirs.last_latency_ms[0] / ours.last_latency_ms[0], 'x lower'),
        (f'latency p95, last {WINDOW_SEC:.0f} s (ms)', ours.last_latency_ms[1], theirs.last_latency_ms[1],
         theirs.last_latency_ms[1] / ours.last_latency_ms[1], 'x lower'),
        ('answers after the camera stopped', ours.late_answers, theirs.late_answers, None, ''),
        ('last of them, after the stop (ms)', ours.last_late_ms, theirs.last_late_ms, None, ''),
        ('resident memory, median (MB)', ours.rss_mb, theirs.rss_mb, ours.rss_mb / theirs.rss_mb, f'x (ours / {name})'),
        ('resident memory, peak (MB)', ours.peak_rss_mb, theirs.peak_rss_mb, ours.peak_rss_mb / theirs.peak_rss_mb,
         f'x (ours / {name})'),
        ('bytes per answer', ours.answer_bytes, theirs.answer_bytes,
         *_size_ratio(ours.answer_bytes, theirs.answer_bytes)),
    ] + ([('instances per answer (median)', ours.instances_per_answer, theirs.instances_per_answer, None, '')]
         if task != 'semantic' else [])
    print(f'  {"":<36} {"ours":>10} {name:>10}')
    for label, mine, other, ratio, words in rows:
        ratio_text = f'  ours {ratio:.2f}{words}' if ratio is not None else ''
        print(f'  {label:<36} {mine:10.1f} {other:10.1f}{ratio_text}')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('task', choices=TASKS + (YOLO,),
                        help=f'{", ".join(TASKS)}: against the plain node; {YOLO}: our instance node against the '
                             'yolo_ros-style node, on one YOLO-seg ONNX')
    add_frame_arguments(parser)
    add_input_size_argument(parser)
    parser.add_argument('--seconds', type=float, default=60.0, help='length of the 30 Hz stream')
    parser.add_argument('--frames', type=int, default=10, help='distinct camera frames, sent in turn')
    parser.add_argument('--checkpoint', default='', help='weights for both nodes (default: the same untrained ones)')
    parser.add_argument('--score-threshold', type=float, default=None,
                        help='instance, yolo: both nodes publish detections at or above this score (default: their '
                             '0.5); untrained weights score nearly every box high, so this sets how many instances '
                             'a frame has')
    parser.add_argument('--model-metadata', type=Path, default=None,
                        help='yolo: the metadata .yaml of an Ultralytics YOLO-seg ONNX export (format: '
                             'ultralytics_seg); both nodes run its ONNX at its input size (--input-size is not '
                             'used) and NMS IoU (nms_iou, default 0.7). Default: the fitted YOLO11n-seg of the '
                             'tests, exported at 640x640 into a temporary folder')


def run(args: argparse.Namespace) -> None:
    use_large_images_profile(os.environ, LOCALHOST_PROFILE)
    # Every node process runs the checkout's packages, also the yolo_ros-style node started as a file.
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get('PYTHONPATH')]))
    frames = camera_frames(args.source, args.frames, *args.size)
    with tempfile.TemporaryDirectory(prefix='versus_') as folder:
        if args.task == YOLO:
            contenders = yolo_commands(args.model_metadata or exported_yolo(folder), args.score_threshold)
        else:
            contenders = commands(args.task, args.checkpoint, tuple(args.input_size), args.score_threshold)
        rclpy.init()
        try:
            results = {name: measure(contender, frames, args.seconds) for name, contender in contenders.items()}
        finally:
            rclpy.try_shutdown()
    report(args.task, results, tuple(args.size), args.seconds)
