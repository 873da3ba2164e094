"""Benchmarks of the node around the model, printed as ratios measured side by side in one run.

    python -m seg_perception.tools.benchmark latency      # node end to end vs its backend call
    python -m seg_perception.tools.benchmark conversion   # camera message -> RGB, ms per megapixel
    python -m seg_perception.tools.benchmark postprocess  # Mask R-CNN: paste + crop + message vs the model
    python -m seg_perception.tools.benchmark cameras      # N cameras: one node vs N single-camera nodes
    python -m seg_perception.tools.benchmark fleet --source ../shared/data/camvid_seq05vd   # Ray: 1 vs 2 workers

``latency`` starts the semantic node as deployed (its own process, as launch does, with
config/driving.yaml) and sends it one camera frame at a time: image published -> class-id image
received, against the backend call the node timed for that very frame in its own process
(FrameTiming.backend_ms); medians. Their ratio is what the node costs on top of the network; the
rest is split into the camera message's delivery, queue, conversion, resizing / upsampling /
argmax, publishing and the class-id image's delivery. ``--size 2160 3840`` with ``--transport
compressed`` or ``--default-dds`` shows what a 4K camera's message costs and what helps.

``postprocess`` times Mask R-CNN as deployed (median of 5 calls) against thresholding, pasting,
cropping and the message fill of its detections (median of ``--repeats``).

``cameras`` feeds 1, 2 and 4 cameras at 30 Hz (best effort, as live cameras publish) into one
semantic node serving all of them and, in the same run, into as many single-camera nodes; it
prints the outputs per second of all cameras together, each camera's latency (stamp -> output
received) p50/p95, the resident memory of the node processes, and the ratios.

``fleet`` makes 8 small bags from a labelled image folder and evaluates them with
``seg_bag evaluate-fleet``'s code on a local Ray, with 1 and then 2 workers, end to end (Ray's
start and each worker's model load included, as a user waits for them): frames per second and the
ratio; then Ray Data over frames (``tools/fleet_ray_data.py``) with 2 workers beside the task per
bag, with the ratio and a check that both give the same confusion matrix.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from seg_perception_msgs.msg import FrameTiming
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_models.configs import DEFAULT_INPUT_SIZE
from seg_models.data.frame_sources import SYNTHETIC, open_frames
from seg_perception.bringup.driving_pipeline import CONFIG_PATH, DRIVING_PIPELINE
from seg_perception.bringup.processes import NodeProcesses, node_command, spin_until
from seg_perception.messages.dds_profile import LOCALHOST_PROFILE, use_large_images_profile
from seg_perception.messages.images import (CAMERA_ENCODINGS, array_to_image_msg, compressed_msg_to_rgb,
                                            image_msg_to_rgb, rgb_to_camera_msg)
from seg_perception.messages.instances import instances_to_msg
from seg_perception.messages.topics import (COMPRESSED_SUFFIX, OUTPUT_QOS, PROCESSING_TIME_OUTPUT, SEMANTIC_NODE,
                                            SEMANTIC_OUTPUT, SEMANTIC_PREDICTION, TRANSPORT_CHOICES,
                                            camera_output_topic, private_topic, stamp_key, stamp_latency_ms)
from seg_perception.package_share import data_path

CAMERA_TOPIC = '/benchmark/image_raw'


def camera_frames(source: str, count: int, height: int, width: int) -> list[np.ndarray]:
    frames = [frame.rgb for frame in open_frames(source, count)]
    return [cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames]


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


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
        rows.append((name, _median_ms(lambda: image_msg_to_rgb(msg), repeats) / megapixels))
    for compression, label in (('jpeg', 'jpg'), ('png', 'png')):
        msg = rgb_to_camera_msg(rgb, Header(), compression)
        rows.append((f'compressed {label}', _median_ms(lambda: compressed_msg_to_rgb(msg), repeats) / megapixels))
    return rows


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
    semantic_node = next(node for node in DRIVING_PIPELINE if node.name == SEMANTIC_NODE)
    overrides = [f'input_transport:={transport}', *params] + ([f'checkpoint:={checkpoint}'] if checkpoint else [])
    rclpy.init()
    probe = LatencyProbe(transport, publisher_depth)
    round_trips, timings, lost = [], [], 0
    try:
        command = node_command(semantic_node, CAMERA_TOPIC, config=data_path(CONFIG_PATH), overrides=overrides)
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
    model_ms = _median_ms(lambda: segmenter.infer_raw([frame]), MODEL_REPEATS)
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
        rows[name] = (_median_ms(lambda: postprocess(raw), repeats), len(result.instances),
                      float(np.mean(areas or [0])))
    return model_ms, segmenter.backend.describe(), rows


CAMERA_COUNTS = (1, 2, 4)
CAMERA_RATE_HZ = 30.0


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


def rss_mb(pid: int, field: str = 'VmRSS') -> float:
    """Resident memory of process ``pid`` now (VmRSS), or at its highest so far (VmHWM)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024
    return 0.0


def camera_load(frame: np.ndarray, groups: list[list[str]], max_batch: Optional[int], overrides: list[str],
                warmup_sec: float, window_sec: float) -> CameraLoadResult:
    """Every camera at 30 Hz, one semantic node per group of cameras (``max_batch``: None, the
    group's size)."""
    semantic_node = next(node for node in DRIVING_PIPELINE if node.name == SEMANTIC_NODE)
    commands = [node_command(semantic_node, group[0], overrides=overrides + [
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


def fleet_scaling(source: Path, bags: int, frames_per_bag: int, input_size: tuple[int, int],
                  worker_counts: tuple[int, ...] = (1, 2)) -> None:
    """Frames per second of a fleet evaluation of ``bags`` bags with each worker count, and the
    ratio; then, with the most workers, Ray Data over frames beside the per-bag actors."""
    import tempfile

    from seg_models.data.datasets import open_dataset
    from seg_perception.evaluation.fleet import FleetSettings, run_fleet
    from seg_perception.evaluation.fleet_worker import FleetModel
    from seg_perception.evaluation.make_bag import make_bag
    from seg_perception.tools.fleet_ray_data import ray_data_confusion

    label_set = open_dataset(source).info.label_set or 'camvid'
    model = FleetModel(tasks=('semantic',), overrides=(
        f'input_height:={input_size[0]}', f'input_width:={input_size[1]}', 'backend:=pytorch',
        f'semantic_segmentation:label_set:={label_set}'))
    with tempfile.TemporaryDirectory(prefix='fleet_bench_') as folder:
        paths = []
        for index in range(bags):
            paths.append(Path(folder) / f'drive_{index}.bag')
            make_bag([open_dataset(source, max_frames=frames_per_bag)], paths[-1])
        rates, reports = {}, {}
        for workers in worker_counts:
            started = time.perf_counter()
            reports[workers] = run_fleet(paths, FleetSettings(model=model, workers=workers, cache_dir=None))
            elapsed = time.perf_counter() - started
            rates[workers] = reports[workers]['overall']['frames'] / elapsed
            print(f'{workers} worker(s), a task per bag: {reports[workers]["overall"]["frames"]} frames of {bags} bags '
                  f'in {elapsed:.1f} s = {rates[workers]:.2f} frames/s '
                  f'(mIoU {100 * reports[workers]["overall"]["miou"]:.1f}%)')
        most, fewest = worker_counts[-1], worker_counts[0]
        print(f'{most} workers / {fewest}: {rates[most] / rates[fewest]:.2f}x ({os.cpu_count()} CPU cores)')
        started = time.perf_counter()
        matrix, frames = ray_data_confusion(paths, model, most)
        elapsed = time.perf_counter() - started
        same = np.array_equal(matrix, np.array(reports[most]['overall']['confusion']))
        print(f'{most} workers, Ray Data over frames: {frames} frames in {elapsed:.1f} s = {frames / elapsed:.2f} '
              f'frames/s (confusion matrix {"equal to" if same else "DIFFERENT from"} the per-bag run\'s)')
        print(f'a task per bag / Ray Data over frames, {most} workers: {rates[most] / (frames / elapsed):.2f}x')


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=('latency', 'conversion', 'postprocess', 'cameras', 'fleet'))
    parser.add_argument('--source', default=SYNTHETIC, help='folder of images, video, or "synthetic"')
    parser.add_argument('--size', type=int, nargs=2, default=None, metavar=('HEIGHT', 'WIDTH'),
                        help='frame size (default: 720 1280; postprocess: 1024 2048)')
    parser.add_argument('--instances', type=int, default=50, help='postprocess: detections kept')
    parser.add_argument('--frames', type=int, default=10, help='frames timed (after warm-up)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--checkpoint', default='', help='semantic weights (default: untrained, same speed)')
    parser.add_argument('--repeats', type=int, default=20, help='conversion: timings per encoding')
    parser.add_argument('--cameras', type=int, nargs='+', default=list(CAMERA_COUNTS), help='cameras: camera counts')
    parser.add_argument('--input-size', type=int, nargs=2, default=DEFAULT_INPUT_SIZE, metavar=('HEIGHT', 'WIDTH'),
                        help='cameras, fleet: network input (default 512 1024, as config/driving.yaml)')
    parser.add_argument('--window', type=float, default=20.0, help='cameras: seconds measured per setup')
    parser.add_argument('--transport', choices=TRANSPORT_CHOICES, default='raw',
                        help='latency: camera frames as rgb8 Images or JPEG CompressedImages')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='latency: a node parameter over config/driving.yaml, e.g. input_reliability:=reliable')
    parser.add_argument('--publisher-depth', type=int, default=5,
                        help='latency: history depth of the camera publisher (5: rclpy sensor data QoS)')
    parser.add_argument('--answer-timeout', type=float, default=30.0,
                        help='latency: seconds after which a frame counts as lost')
    parser.add_argument('--default-dds', action='store_true',
                        help="publish camera frames with Fast DDS's defaults instead of the large-message "
                             'profile (64 MiB shared-memory segments) this benchmark uses otherwise')
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if not args.default_dds:
        use_large_images_profile(os.environ, LOCALHOST_PROFILE)  # best-effort camera frames of any size arrive
    if args.what == 'fleet':
        fleet_scaling(Path(args.source), bags=8, frames_per_bag=args.frames, input_size=tuple(args.input_size))
        return
    height, width = args.size or ((1024, 2048) if args.what == 'postprocess' else (720, 1280))
    frames = camera_frames(args.source, args.frames, height, width)
    if args.what == 'postprocess':
        model_ms, backend, rows = instance_postprocess_share(frames[0], args.instances, args.checkpoint, args.repeats)
        print(f'Mask R-CNN as deployed (config/driving.yaml), {width}x{height} camera, {backend}: model (backend '
              f'call) median of {MODEL_REPEATS} {model_ms:.1f} ms')
        print('post-processing = threshold, paste, crop, message fill; median of', args.repeats)
        for name, (post_ms, kept, area) in rows.items():
            print(f'  {name:<24} {kept:3d} instances, mean box {area:7.0f} px: {post_ms:7.1f} ms = '
                  f'{post_ms / model_ms:6.1%} of the model time (target <= 10%)')
        return
    if args.what == 'cameras':
        overrides = ['backend:=onnxruntime', f'input_height:={args.input_size[0]}',
                     f'input_width:={args.input_size[1]}'] + ([f'checkpoint:={args.checkpoint}']
                                                                  if args.checkpoint else [])
        print(f'semantic segmentation, cameras at {CAMERA_RATE_HZ:.0f} Hz, {width}x{height} rgb8, network '
              f'{args.input_size[1]}x{args.input_size[0]}, ONNX Runtime, {os.cpu_count()} CPU cores')
        camera_scaling(frames[0], tuple(args.cameras), overrides, warmup_sec=5.0, window_sec=args.window)
        return
    if args.what == 'conversion':
        print(f'camera message -> RGB at {width}x{height}, median of {args.repeats}:')
        print(f'{"encoding":<22} {"ms per megapixel":>18}')
        for name, cost in conversion_costs(frames[0], args.repeats):
            print(f'{name:<22} {cost:>18.2f}')
        return
    run = node_latency(frames, args.checkpoint, args.warmup, args.transport, args.answer_timeout,
                       args.publisher_depth, args.param)
    dds = 'Fast DDS defaults' if args.default_dds else 'large-message DDS profile'
    print_node_latency(run, (height, width), f'{args.transport} transport, camera publisher history depth '
                                             f'{args.publisher_depth}, {dds}{"".join(", " + p for p in args.param)}')


if __name__ == '__main__':
    main()
