"""Run the driving pipeline on a frame sequence without ``ros2 launch`` and keep its outputs.

Starts the nodes of ``driving_pipeline.DRIVING_PIPELINE`` as separate processes with the same
parameter file the launch file uses, publishes each frame on the camera topic as a camera would,
waits for every node's outputs for it (nothing is dropped) and writes them to disk:

    OUTPUT/labels/<frame>.png      class ids (mono8 PNG, lossless; 255 = unlabeled)
    OUTPUT/color/<frame>.png       palette view of the class ids
    OUTPUT/instances/<frame>.png   Mask R-CNN instances drawn on the frame (masks, boxes, classes)
"""
from __future__ import annotations

import argparse
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

from seg_models.frame_sources import SYNTHETIC, open_frames
from seg_models.package_data import data_path
from seg_perception.bringup.driving_pipeline import CONFIG_FILE, CONFIG_PATH, DEFAULT_CAMERA_TOPIC, DRIVING_PIPELINE
from seg_perception.bringup.processes import NodeProcesses, node_command, spin_until
from seg_perception.messages.images import array_to_image_msg, output_msg_to_array
from seg_perception.messages.topics import (COLOR_OUTPUT, INSTANCE_NODE, INSTANCE_PREDICTION, LABEL_INFO_QOS,
                                            LABEL_INFO_SUFFIX, OUTPUT_QOS, OVERLAY_OUTPUT, SEMANTIC_NODE,
                                            SEMANTIC_PREDICTION, private_topic, stamp_key)

STARTUP_TIMEOUT_SEC = 300.0
FRAME_TIMEOUT_SEC = 120.0

# Image outputs kept per frame: folder -> topic. Subscribing to them also wakes the lazy nodes.
IMAGE_OUTPUTS = {'labels': SEMANTIC_PREDICTION, 'color': private_topic(SEMANTIC_NODE, COLOR_OUTPUT),
                 'instances': private_topic(INSTANCE_NODE, OVERLAY_OUTPUT)}


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
        self.create_subscription(InstanceMaskArray, INSTANCE_PREDICTION,
                                 lambda msg: self.instance_counts.__setitem__(stamp_key(msg.header),
                                                                              len(msg.instances)),
                                 OUTPUT_QOS)

    def ready(self) -> bool:
        """Every node announced its label set and the camera has every node as subscriber."""
        return (len(self.label_sets) == len(DRIVING_PIPELINE)
                and self.camera_publisher.get_subscription_count() >= len(DRIVING_PIPELINE))

    def complete(self, key: tuple[int, int]) -> bool:
        return key in self.instance_counts and all(key in store for store in self.images.values())

    @staticmethod
    def _keep(store: dict, msg: Image) -> None:
        store[stamp_key(msg.header)] = msg


def _wait(collector: OutputCollector, processes: NodeProcesses, condition, timeout: float, what: str) -> None:
    if not spin_until(collector, condition, timeout, processes.check_alive):
        raise TimeoutError(f'no {what} within {timeout:.0f} s')


def run(source: str, output: Path, config: Path, camera_topic: str, overrides: dict[str, list[str]],
        max_frames: int) -> int:
    """Process every frame of ``source``; ``overrides`` maps node names to their ``NAME:=VALUE``
    parameter overrides. Returns the number of frames written."""
    frames = open_frames(source, max_frames)
    commands = [node_command(node, camera_topic, config, overrides.get(node.name, [])) for node in DRIVING_PIPELINE]
    for folder in IMAGE_OUTPUTS:
        (output / folder).mkdir(parents=True, exist_ok=True)
    rclpy.init()
    collector = OutputCollector(camera_topic)
    written = instances = 0
    latencies = []
    try:
        with NodeProcesses(commands) as processes:
            _wait(collector, processes, collector.ready, STARTUP_TIMEOUT_SEC,
                  'pipeline start (label sets and camera subscriptions)')
            for frame in tqdm(frames, desc='frames', unit='frame'):
                stamp = collector.get_clock().now().to_msg()
                key = (stamp.sec, stamp.nanosec)
                started = time.monotonic()
                collector.camera_publisher.publish(
                    array_to_image_msg(frame.rgb, 'rgb8', Header(stamp=stamp, frame_id='camera')))
                _wait(collector, processes, lambda: collector.complete(key), FRAME_TIMEOUT_SEC,
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
        label_set = collector.label_sets[SEMANTIC_NODE].name
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
        parser.add_argument('--' + node.checkpoint_argument.replace('_', '-'), default='',
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
        checkpoint = getattr(args, node.checkpoint_argument)
        if checkpoint:
            overrides[node.name].append(f'checkpoint:={Path(checkpoint).resolve()}')
    config = args.config or data_path(CONFIG_PATH)
    try:
        written = run(args.source, args.output, config, args.camera_topic, overrides, args.max_frames)
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as error:
        print(f'run_pipeline: {error}', file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if written else 1)


if __name__ == '__main__':
    main()
