"""Run the driving pipeline on a frame sequence without ``ros2 launch`` and keep its outputs.

Starts the nodes of ``driving_pipeline.DRIVING_PIPELINE`` as separate processes with the same
parameter file the launch file uses, publishes each frame on every camera topic as cameras would,
waits for every node's outputs for it (nothing is dropped) and writes them to disk:

    OUTPUT/labels/<frame>.png      class ids (mono8 PNG, lossless; the label set's ignore id = unlabeled)
    OUTPUT/color/<frame>.png       palette view of the class ids
    OUTPUT/overlay/<frame>.png     the class colours blended over the camera frame
    OUTPUT/instances/<frame>.png   Mask R-CNN instances drawn on the frame (masks, boxes, classes)
    OUTPUT/panoptic/<frame>.png    with --panoptic: the panoptic node's colour view (stuff in class colours,
                                   each object in a shade of its class colour that follows its track)

With several cameras (the nodes' ``cameras`` parameter, from the parameter file or ``--cameras``)
each camera's outputs go to ``OUTPUT/<camera namespace>/``; ``--source`` once feeds the same
sequence to every camera, once per camera gives each its own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import rclpy
import yaml
from rclpy.node import Node
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from seg_perception_msgs.msg import InstanceMaskArray
from seg_perception_msgs.msg import LabelSet as LabelSetMsg
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tqdm import tqdm

from seg_models.checkpoints.model_card import is_demo_weights
from seg_models.checkpoints.named import absolute_checkpoint
from seg_models.data.frame_sources import SYNTHETIC, open_frames
from seg_perception.bringup.driving_pipeline import (CONFIG_FILE, CONFIG_PATH, DEFAULT_CAMERA_TOPIC, DRIVING_PIPELINE,
                                                     PANOPTIC_FUSION, PipelineNode)
from seg_perception.bringup.processes import NodeProcesses, node_command, spin_until
from seg_perception.messages.dds_profile import LOCALHOST_PROFILE, use_large_images_profile
from seg_perception.messages.images import array_to_image_msg, output_msg_to_array
from seg_perception.messages.topics import (CAMERA_INPUT, COLOR_OUTPUT, COMPRESSED_SUFFIX, DEFAULT_CAMERAS, DIAGNOSTICS,
                                            DIAGNOSTICS_QOS,
                                            INSTANCE_NODE, INSTANCE_OUTPUT, LABEL_INFO_QOS, LABEL_INFO_SUFFIX,
                                            OUTPUT_QOS, OVERLAY_OUTPUT, PANOPTIC_NODE, SEMANTIC_NODE, SEMANTIC_OUTPUT,
                                            camera_namespace, camera_output_topic, stamp_key)
from seg_perception.package_share import data_path
from seg_perception.runtime.diagnostics import status_values

STARTUP_TIMEOUT_SEC = 300.0
FRAME_TIMEOUT_SEC = 120.0

# Image outputs kept per frame: folder -> (node, output). Subscribing to them also wakes the lazy nodes.
IMAGE_OUTPUTS = {'labels': (SEMANTIC_NODE, SEMANTIC_OUTPUT), 'color': (SEMANTIC_NODE, COLOR_OUTPUT),
                 'overlay': (SEMANTIC_NODE, OVERLAY_OUTPUT), 'instances': (INSTANCE_NODE, OVERLAY_OUTPUT)}
PANOPTIC_IMAGE_OUTPUTS = {'panoptic': (PANOPTIC_NODE, COLOR_OUTPUT)}  # with --panoptic


def started_nodes(panoptic: bool) -> tuple[PipelineNode, ...]:
    """The nodes a run starts: the driving pipeline, and with ``panoptic`` its fusion node."""
    return DRIVING_PIPELINE + ((PANOPTIC_FUSION,) if panoptic else ())


def image_outputs(panoptic: bool) -> dict[str, tuple[str, str]]:
    return {**IMAGE_OUTPUTS, **(PANOPTIC_IMAGE_OUTPUTS if panoptic else {})}


@dataclass(frozen=True)
class RunnerCamera:
    """One camera of the pipeline as the runner drives it."""

    entry: str  # as in the nodes' cameras parameter
    topic: str  # where the runner publishes its frames
    folder: Path  # where its outputs are written

    def output(self, node_name: str, output: str) -> str:
        return camera_output_topic(self.entry, node_name, output)


def runner_cameras(entries: Sequence[str], camera_topic: str, output: Path) -> list[RunnerCamera]:
    """The default camera "image" is published on ``camera_topic`` and written to ``output``; named
    cameras on their own topics, into ``output/<camera namespace>``."""
    cameras = []
    for entry in entries:
        if entry.endswith(COMPRESSED_SUFFIX):
            raise ValueError(f'camera {entry}: the runner publishes raw sensor_msgs/Image frames; list the raw topic')
        if entry == CAMERA_INPUT:
            cameras.append(RunnerCamera(entry, camera_topic, output))
        else:
            topic = '/' + entry.lstrip('/')
            cameras.append(RunnerCamera(entry, topic, output / camera_namespace(topic).strip('/').replace('/', '_')))
    return cameras


class OutputCollector(Node):
    """Publishes frames on the camera topics and keeps what the pipeline sends back, by camera and stamp."""

    def __init__(self, cameras: Sequence[RunnerCamera], panoptic: bool = False) -> None:
        super().__init__('pipeline_runner')
        self.cameras = list(cameras)
        self.nodes = started_nodes(panoptic)
        outputs = image_outputs(panoptic)
        self.camera_publishers = [self.create_publisher(Image, camera.topic, OUTPUT_QOS) for camera in cameras]
        self.label_sets: dict[tuple[str, str], LabelSetMsg] = {}  # (camera topic, node) -> label set
        self.images = [{folder: {} for folder in outputs} for _ in cameras]
        self.instance_counts: list[dict[tuple[int, int], int]] = [{} for _ in cameras]
        self.weights: dict[str, str] = {}  # node -> its weights, as its /diagnostics status says them
        self.errors: dict[str, str] = {}  # status name -> its latest message, while /diagnostics reports an error
        self.create_subscription(DiagnosticArray, DIAGNOSTICS, self._on_diagnostics, DIAGNOSTICS_QOS)
        for camera, images, counts in zip(cameras, self.images, self.instance_counts):
            for node in self.nodes:
                self.create_subscription(LabelSetMsg, camera.output(node.name, node.output) + LABEL_INFO_SUFFIX,
                                         lambda msg, key=(camera.topic, node.name): self.label_sets.__setitem__(
                                             key, msg), LABEL_INFO_QOS)
            for folder, (node_name, output) in outputs.items():
                self.create_subscription(Image, camera.output(node_name, output),
                                         lambda msg, store=images[folder]: self._keep(store, msg), OUTPUT_QOS)
            self.create_subscription(InstanceMaskArray, camera.output(INSTANCE_NODE, INSTANCE_OUTPUT),
                                     lambda msg, store=counts: store.__setitem__(stamp_key(msg.header),
                                                                                 len(msg.instances)),
                                     OUTPUT_QOS)

    def ready(self) -> bool:
        """Every node announced its label set for every camera, and every camera has every node as subscriber."""
        return (len(self.label_sets) == len(self.nodes) * len(self.cameras)
                and all(publisher.get_subscription_count() >= len(DRIVING_PIPELINE)
                        for publisher in self.camera_publishers))

    def complete(self, key: tuple[int, int]) -> bool:
        return all(key in counts and all(key in store for store in images.values())
                   for images, counts in zip(self.images, self.instance_counts))

    @staticmethod
    def _keep(store: dict, msg: Image) -> None:
        store[stamp_key(msg.header)] = msg

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = status_values(status)
            if 'weights' in values:
                self.weights[status.name.split(':')[0]] = values['weights']
            if status.level == DiagnosticStatus.ERROR:
                self.errors[status.name] = status.message
            else:
                self.errors.pop(status.name, None)


STARTUP_NOTE = ('the first start exports each model to ONNX and times the backends, about 2 minutes on a '
                '2-core CPU; later starts take seconds')
HEARTBEAT_SEC = 15.0


def _wait(collector: OutputCollector, processes: NodeProcesses, condition, timeout: float, what: str,
          note: str = '') -> None:
    """Spin until ``condition``; with a ``note``, say every ``HEARTBEAT_SEC`` how long it has been."""
    started = last = time.monotonic()

    def check() -> None:
        nonlocal last
        processes.check_alive()
        if note and time.monotonic() - last >= HEARTBEAT_SEC:
            last = time.monotonic()
            print(f'run_pipeline: waiting for the {what}: {last - started:.0f} s ({note})', flush=True)

    if not spin_until(collector, condition, timeout, check):
        errors = '; '.join(f'{name}: {message}' for name, message in sorted(collector.errors.items()))
        raise TimeoutError(f'no {what} within {timeout:.0f} s' + (f' (/diagnostics: {errors})' if errors else ''))


def run(sources: Sequence[str], output: Path, config: Path, cameras: Sequence[RunnerCamera],
        overrides: dict[str, list[str]], max_frames: int, panoptic: bool = False) -> int:
    """Process every frame of ``sources`` (one per camera, or one for all); ``overrides`` maps node
    names to their ``NAME:=VALUE`` parameter overrides; ``panoptic`` also starts the fusion node and
    keeps its colour view. Returns the number of frames written."""
    if len(sources) not in (1, len(cameras)):
        raise ValueError(f'{len(sources)} sources for {len(cameras)} cameras: give one source, or one per camera')
    streams = [open_frames(source, max_frames) for source in sources]
    frames = zip(*streams) if len(streams) > 1 else ([frame] * len(cameras) for frame in streams[0])
    # The runner sends a frame once every node answered the last: a node waiting on a slower one is
    # paced, not facing a silent camera (the user's own overrides come after, and win).
    paced = [f'input_timeout_sec:={FRAME_TIMEOUT_SEC}']
    nodes = started_nodes(panoptic)
    commands = [node_command(node, cameras[0].topic, config, paced + overrides.get(node.name, []))
                for node in nodes]
    for camera in cameras:
        for folder in image_outputs(panoptic):
            (camera.folder / folder).mkdir(parents=True, exist_ok=True)
    rclpy.init()
    collector = OutputCollector(cameras, panoptic)
    written = instances = 0
    latencies = []
    try:
        with NodeProcesses(commands) as processes:
            print(f'run_pipeline: starting {", ".join(node.name for node in nodes)} ({STARTUP_NOTE})',
                  flush=True)
            _wait(collector, processes, collector.ready, STARTUP_TIMEOUT_SEC,
                  'pipeline start (label sets and camera subscriptions)', note=STARTUP_NOTE)
            for camera_frames in tqdm(frames, desc='frames', unit='frame'):
                header = Header(stamp=collector.get_clock().now().to_msg(), frame_id='camera')
                key = stamp_key(header)
                started = time.monotonic()
                for publisher, frame in zip(collector.camera_publishers, camera_frames):
                    publisher.publish(array_to_image_msg(frame.rgb, 'rgb8', header))
                _wait(collector, processes, lambda: collector.complete(key), FRAME_TIMEOUT_SEC,
                      f'output for frame {camera_frames[0].name}')
                latencies.append(time.monotonic() - started)
                for camera, frame, images, counts in zip(cameras, camera_frames, collector.images,
                                                         collector.instance_counts):
                    for folder, store in images.items():
                        image = output_msg_to_array(store.pop(key))
                        cv2.imwrite(str(camera.folder / folder / f'{frame.name}.png'),
                                    image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                    instances += counts.pop(key)
                written += 1
    finally:
        collector.destroy_node()
        rclpy.try_shutdown()
    if written:
        print(summary(written, cameras, collector.label_sets[(cameras[0].topic, SEMANTIC_NODE)].name, instances,
                      float(np.median(latencies)), collector.weights, tuple(image_outputs(panoptic))))
    return written


def _count(number: int, noun: str) -> str:
    return f'{number} {noun}' + ('' if number == 1 else 's')


def summary(frames: int, cameras: Sequence[RunnerCamera], label_set: str, instances: int, seconds_per_frame: float,
            weights: dict[str, str], folders: Sequence[str] = tuple(IMAGE_OUTPUTS)) -> str:
    """What the run did, in plain words, with what each node's weights are (untrained said plainly)."""
    lines = [f'{_count(frames, "frame")} segmented from {_count(len(cameras), "camera")} (label set {label_set}), '
             f'{_count(instances, "instance")} found; median time per frame {seconds_per_frame * 1000:.0f} ms; '
             f'outputs ({", ".join(folder + "/" for folder in folders)}) in '
             f'{", ".join(str(camera.folder) for camera in cameras)}']
    for node in DRIVING_PIPELINE:
        source = weights.get(node.name, 'unknown')
        if source == 'untrained':
            lines.append(f'{node.name}: UNTRAINED (random) weights, its outputs are meaningless; give it a checkpoint '
                         f'(--{node.checkpoint_argument.replace("_", "-")})')
        elif is_demo_weights(source):
            lines.append(f'{node.name}: the shipped demo model, trained on CamVid (CC BY-NC 4.0: non-commercial; a '
                         f'demo, not a driving model)')
        else:
            lines.append(f'{node.name}: weights {source}')
    return '\n'.join(lines)


def configured_cameras(config: Path) -> list[str]:
    """The semantic node's cameras in the parameter file (its default where the file sets none)."""
    parameters = yaml.safe_load(Path(config).read_text()).get(SEMANTIC_NODE, {}).get('ros__parameters', {})
    return list(parameters.get('cameras', DEFAULT_CAMERAS))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', action='append', default=None,
                        help='folder of images, video file, or "synthetic" (default); once per camera, or once '
                             'for all cameras')
    parser.add_argument('--cameras', nargs='+', default=None, metavar='TOPIC',
                        help='camera topics, e.g. /front/image_raw /rear/image_raw (default: the parameter file\'s '
                             'cameras; [image] is the one camera on --camera-topic)')
    parser.add_argument('--output', type=Path, default=Path('out/pipeline'), help='folder for the outputs')
    parser.add_argument('--config', type=Path, default=None, help=f'parameter file (default: {CONFIG_FILE})')
    parser.add_argument('--camera-topic', default=DEFAULT_CAMERA_TOPIC, help='topic of the default camera "image"')
    parser.add_argument('--max-frames', type=int, default=0, help='stop after this many frames (0 = all)')
    for node in DRIVING_PIPELINE:
        parser.add_argument('--' + node.checkpoint_argument.replace('_', '-'), default='',
                            help=f'weights for {node.name} (default: the parameter file value)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='parameter override for the nodes, as with --ros-args -p')
    parser.add_argument('--panoptic', action='store_true',
                        help='also start panoptic_segmentation and write its colour view to OUTPUT/panoptic/')
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    use_large_images_profile(os.environ, LOCALHOST_PROFILE)  # this process's frames and its nodes' outputs
    config = args.config or data_path(CONFIG_PATH)
    # The runner publishes every frame and waits for its output: a reliable input loses nothing.
    common = ['input_reliability:=reliable']
    if args.cameras:
        common.append(f'cameras:=[{", ".join(args.cameras)}]')
    overrides = {PANOPTIC_FUSION.name: common + args.param}  # it takes cameras; the others it does not declare
    for node in DRIVING_PIPELINE:
        overrides[node.name] = common + args.param
        checkpoint = getattr(args, node.checkpoint_argument)
        if checkpoint:
            overrides[node.name].append(f'checkpoint:={absolute_checkpoint(checkpoint)}')
    try:
        cameras = runner_cameras(args.cameras or configured_cameras(config), args.camera_topic, args.output)
        written = run(args.source or [SYNTHETIC], args.output, config, cameras, overrides, args.max_frames,
                      args.panoptic)
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as error:
        print(f'run_pipeline: {error}', file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if written else 1)


if __name__ == '__main__':
    main()
