"""Run the driving pipeline on a frame sequence without ``ros2 launch`` and keep its outputs.

Starts the nodes of ``pipeline_spec.DRIVING_PIPELINE`` as separate processes with the same
parameter file the launch file uses, publishes each frame on the camera topic as a camera would,
waits for every node's outputs for it (nothing is dropped) and writes them to disk:

    OUTPUT/labels/<frame>.png      class ids (mono8 PNG, lossless; 255 = unlabeled)
    OUTPUT/color/<frame>.png       palette view of the class ids
    OUTPUT/instances/<frame>.png   Mask R-CNN instances drawn on the frame (masks, boxes, classes)
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from seg_perception_msgs.msg import InstanceMaskArray
from seg_perception_msgs.msg import LabelSet as LabelSetMsg
from std_msgs.msg import Header
from tqdm import tqdm

from seg_perception.frame_sources import SYNTHETIC, open_frames
from seg_perception.image_conversion import array_to_image_msg, output_msg_to_array
from seg_perception.label_info import LABEL_INFO_QOS, LABEL_INFO_SUFFIX
from seg_perception.pipeline_spec import (CONFIG_FILE, DEFAULT_CAMERA_TOPIC, DRIVING_PIPELINE, PACKAGE,
                                          PipelineNode, checkpoint_argument)
from seg_perception.topics import INSTANCE_OUTPUT, OUTPUT_QOS, SEMANTIC_OUTPUT

STARTUP_TIMEOUT_SEC = 300.0
FRAME_TIMEOUT_SEC = 120.0
STOP_TIMEOUT_SEC = 15.0


def default_config_path() -> Path:
    """The source tree's config when run from a checkout, else the installed share/ copy."""
    source_config = Path(__file__).resolve().parent.parent / 'config' / CONFIG_FILE
    if source_config.is_file():
        return source_config
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / 'config' / CONFIG_FILE


def node_command(node: PipelineNode, config: Path, camera_topic: str, overrides: list[str]) -> list[str]:
    """The command line ``ros2 launch`` would build for ``node``, run through this interpreter."""
    command = [sys.executable, '-m', node.module, '--ros-args', '-r', f'__node:={node.name}',
               '-r', f'{node.camera_input}:={camera_topic}', '--params-file', str(config)]
    for override in overrides:
        command += ['-p', override]
    return command


# Image outputs kept per frame: folder -> topic. Subscribing to them also wakes the lazy nodes.
IMAGE_OUTPUTS = {'labels': SEMANTIC_OUTPUT, 'color': '/semantic_segmentation/color',
                 'instances': '/instance_segmentation/overlay'}


class OutputCollector(Node):
    """Publishes frames on the camera topic and keeps what the pipeline sends back, by stamp."""

    def __init__(self, camera_topic: str) -> None:
        super().__init__('pipeline_runner')
        self.camera_publisher = self.create_publisher(Image, camera_topic, OUTPUT_QOS)
        self.label_sets: dict[str, LabelSetMsg] = {}
        self.images: dict[str, dict[tuple[int, int], Image]] = {folder: {} for folder in IMAGE_OUTPUTS}
        self.instance_counts: dict[tuple[int, int], int] = {}
        for node in DRIVING_PIPELINE:
            self.create_subscription(LabelSetMsg, node.output + LABEL_INFO_SUFFIX,
                                     lambda msg, name=node.name: self.label_sets.__setitem__(name, msg),
                                     LABEL_INFO_QOS)
        for folder, topic in IMAGE_OUTPUTS.items():
            self.create_subscription(Image, topic, lambda msg, store=self.images[folder]: self._keep(store, msg),
                                     OUTPUT_QOS)
        self.create_subscription(InstanceMaskArray, INSTANCE_OUTPUT,
                                 lambda msg: self.instance_counts.__setitem__(_key(msg.header), len(msg.instances)),
                                 OUTPUT_QOS)

    def ready(self) -> bool:
        """Every node announced its label set and the camera has every node as subscriber."""
        return (len(self.label_sets) == len(DRIVING_PIPELINE)
                and self.camera_publisher.get_subscription_count() >= len(DRIVING_PIPELINE))

    def complete(self, key: tuple[int, int]) -> bool:
        return key in self.instance_counts and all(key in store for store in self.images.values())

    @staticmethod
    def _keep(store: dict, msg: Image) -> None:
        store[_key(msg.header)] = msg


def _key(header: Header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class PipelineProcesses:
    """The node processes, stopped with SIGINT (as ``ros2 launch`` does) when leaving the block."""

    def __init__(self, commands: list[list[str]]) -> None:
        self.commands = commands
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> 'PipelineProcesses':
        env = dict(os.environ)
        env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        self.processes = [subprocess.Popen(command, env=env) for command in self.commands]
        return self

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f'node process exited with code {process.returncode}: {" ".join(process.args)}')

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _spin_until(collector: OutputCollector, processes: PipelineProcesses, condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f'no {what} within {timeout:.0f} s')
        processes.check_alive()
        rclpy.spin_once(collector, timeout_sec=0.05)


def run(source: str, output: Path, config: Path, camera_topic: str, overrides: dict[str, list[str]],
        max_frames: int) -> int:
    """Process every frame of ``source``; ``overrides`` maps node names to their ``NAME:=VALUE``
    parameter overrides. Returns the number of frames written."""
    frames = open_frames(source, max_frames)
    commands = [node_command(node, config, camera_topic, overrides.get(node.name, [])) for node in DRIVING_PIPELINE]
    for folder in IMAGE_OUTPUTS:
        (output / folder).mkdir(parents=True, exist_ok=True)
    rclpy.init()
    collector = OutputCollector(camera_topic)
    written = instances = 0
    latencies = []
    try:
        with PipelineProcesses(commands) as processes:
            _spin_until(collector, processes, collector.ready, STARTUP_TIMEOUT_SEC,
                        'pipeline start (label sets and camera subscriptions)')
            for frame in tqdm(frames, desc='frames', unit='frame'):
                stamp = collector.get_clock().now().to_msg()
                key = (stamp.sec, stamp.nanosec)
                started = time.monotonic()
                collector.camera_publisher.publish(
                    array_to_image_msg(frame.rgb, 'rgb8', Header(stamp=stamp, frame_id='camera')))
                _spin_until(collector, processes, lambda: collector.complete(key), FRAME_TIMEOUT_SEC,
                            f'output for frame {frame.name}')
                latencies.append(time.monotonic() - started)
                for folder, store in collector.images.items():
                    image = output_msg_to_array(store.pop(key))
                    cv2.imwrite(str(output / folder / f'{frame.name}.png'),
                                image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                instances += collector.instance_counts.pop(key)
                written += 1
    finally:
        collector.destroy_node()
        rclpy.try_shutdown()
    if written:
        label_set = collector.label_sets['semantic_segmentation'].name
        print(f'{written} frames segmented (label set {label_set}), {instances} instances found; median time '
              f'per frame {np.median(latencies) * 1000:.0f} ms; outputs in {output}/labels, {output}/color '
              f'and {output}/instances')
    return written


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', default=SYNTHETIC,
                        help='folder of images, video file, or "synthetic" (default)')
    parser.add_argument('--output', type=Path, default=Path('out/pipeline'), help='folder for the outputs')
    parser.add_argument('--config', type=Path, default=None, help=f'parameter file (default: {CONFIG_FILE})')
    parser.add_argument('--camera-topic', default=DEFAULT_CAMERA_TOPIC)
    parser.add_argument('--max-frames', type=int, default=0, help='stop after this many frames (0 = all)')
    for node in DRIVING_PIPELINE:
        parser.add_argument('--' + checkpoint_argument(node).replace('_', '-'), default='',
                            help=f'weights for {node.name} (default: the parameter file value)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='parameter override for the nodes, as with --ros-args -p')
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    # The runner publishes every frame and waits for its output: a reliable input loses nothing.
    overrides = {}
    for node in DRIVING_PIPELINE:
        overrides[node.name] = ['input_reliability:=reliable'] + args.param
        checkpoint = getattr(args, checkpoint_argument(node))
        if checkpoint:
            overrides[node.name].append(f'checkpoint:={Path(checkpoint).resolve()}')
    config = args.config or default_config_path()
    try:
        written = run(args.source, args.output, config, args.camera_topic, overrides, args.max_frames)
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as error:
        print(f'run_pipeline: {error}', file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if written else 1)


if __name__ == '__main__':
    main()
