"""Replay a bag's camera into the running nodes over real topics and record what they publish.

Two paces:
* back-pressure (``rate`` 0, the default): each frame is published, then replay waits until every
  node's output for that stamp has arrived (or ``frame_timeout_sec`` passed): nothing is lost to a
  slow CPU, and every frame is accounted for;
* recorded rate (``rate`` > 0: a multiple of the bag's own rate), as a live camera would; frames
  the nodes cannot keep up with are dropped by them and show up as missing outputs.

``/clock`` carries each frame's stamp, so nodes started with use_sim_time follow the bag's time.
The result bag holds the replayed camera frames (bag time = when they were published), the nodes'
outputs (bag time = when they arrived), and the bag's ground truth and CameraInfo, so
``evaluate`` needs nothing else: latency is output arrival minus camera publication.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String
from tqdm import tqdm

from seg_perception.bringup.driving_pipeline import DRIVING_PIPELINE
from seg_perception.bringup.processes import node_command, spin_until
from seg_perception.evaluation.bag_io import BagWriter, camera_topic_in_bag, message_class, read_raw, require_topics
from seg_perception.messages.topics import (CAMERA, CAMERA_INFO, CLOCK, LABEL_INFO_QOS, LABEL_INFO_SUFFIX,
                                            PREDICTIONS, RECORDED_BY_DEFAULT, REPLAY_SUMMARY, stamp_key)

RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
DISCOVERY_SETTLE_SEC = 2.0
CAMERA_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class ReplaySettings:
    bag: Path
    output: Path
    camera_topic: str = CAMERA  # its /compressed variant is used when the bag has that instead
    rate: float = 0.0  # 0: back-pressure; > 0: this multiple of the recorded rate
    record: Sequence[str] = RECORDED_BY_DEFAULT
    wait_for: Sequence[str] = PREDICTIONS  # outputs a frame waits for (those that have a publisher)
    frame_timeout_sec: float = 120.0
    startup_timeout_sec: float = 300.0
    storage: str = 'mcap'


@dataclass
class ReplaySummary:
    frames: int = 0
    mode: str = ''
    camera_topic: str = ''
    outputs: dict[str, int] = field(default_factory=dict)  # topic -> frames with that output
    missing: dict[str, int] = field(default_factory=dict)  # topic -> frames without it


class Recorder(Node):
    """Publishes the camera (and /clock, CameraInfo) and records the nodes' outputs into a bag."""

    def __init__(self, camera_topic: str, camera_type: type, writer: BagWriter) -> None:
        super().__init__('bag_replay')
        self.writer = writer
        self.camera = self.create_publisher(camera_type, camera_topic, CAMERA_QOS)
        self.camera_info = self.create_publisher(CameraInfo, CAMERA_INFO, CAMERA_QOS)
        self.clock = self.create_publisher(Clock, CLOCK, CAMERA_QOS)
        self.received: dict[str, set[tuple[int, int]]] = {}

    def record(self, topics: Sequence[str]) -> list[str]:
        """Subscribe to each of ``topics`` that some node publishes and is not recorded yet; returns
        those. Called again before each frame: nodes that start late are recorded from then on."""
        types = dict(self.get_topic_names_and_types())
        recorded = []
        for topic in topics:
            if topic not in types or topic in self.received:
                continue
            qos = LABEL_INFO_QOS if topic.endswith(LABEL_INFO_SUFFIX) else RECORD_QOS
            self.received[topic] = set()
            self.create_subscription(message_class(types[topic][0]), topic,
                                     lambda msg, topic=topic: self._on_output(topic, msg), qos)
            recorded.append(topic)
        return recorded

    def _on_output(self, topic: str, msg: Any) -> None:
        self.writer.write(topic, msg, time.time_ns())
        header = getattr(msg, 'header', None)
        if header is not None:
            self.received[topic].add(stamp_key(header))


def _wait_for_nodes(recorder: Recorder, settings: ReplaySettings, camera_topic: str, expect_all_outputs: bool,
                    check_alive) -> list[str]:
    """The outputs to wait for per frame: those published. With ``expect_all_outputs`` (nodes this
    process started) every one of ``settings.wait_for``, else whichever appear first. Recording
    starts before the camera check: lazy nodes subscribe to the camera only once someone listens."""
    def published() -> list[str]:
        return [topic for topic in settings.wait_for if recorder.count_publishers(topic)]

    spin_until(recorder, lambda: len(published()) == len(settings.wait_for) if expect_all_outputs else published(),
               settings.startup_timeout_sec, check_alive)
    spin_until(recorder, lambda: False, DISCOVERY_SETTLE_SEC)  # the rest of a node's topics, other nodes
    waited = published()
    if not waited:
        raise RuntimeError(f'no node publishes {" or ".join(settings.wait_for)} within '
                           f'{settings.startup_timeout_sec:.0f} s: start the nodes (ros2 launch seg_perception '
                           f'driving.launch.py use_sim_time:=true) or pass --start-pipeline')
    recorder.record(list(dict.fromkeys(list(settings.record) + waited)))
    nodes = {(info.node_namespace, info.node_name) for topic in waited
             for info in recorder.get_publishers_info_by_topic(topic)}
    if not spin_until(recorder, lambda: recorder.camera.get_subscription_count() >= len(nodes),
                      settings.startup_timeout_sec, check_alive):
        raise RuntimeError(f'the nodes publishing {", ".join(waited)} never subscribed to {camera_topic}: check '
                           f'their camera remapping and input_transport')
    return waited


def replay(settings: ReplaySettings, check_alive=lambda: None, expect_all_outputs: bool = False) -> ReplaySummary:
    """Replay ``settings.bag`` into the running nodes; write the result bag; ``check_alive`` raises
    when nodes this process started have died."""
    available = require_topics(settings.bag, [])
    camera_topic = camera_topic_in_bag(available, settings.camera_topic)
    camera_type = message_class(available[camera_topic][0])
    frame_count = available[camera_topic][1]
    summary = ReplaySummary(mode='back-pressure' if settings.rate <= 0 else f'{settings.rate:g}x recorded rate',
                            camera_topic=camera_topic)
    rclpy.init()
    try:
        with BagWriter(settings.output, settings.storage) as writer:
            recorder = Recorder(camera_topic, camera_type, writer)
            waited = _wait_for_nodes(recorder, settings, camera_topic, expect_all_outputs, check_alive)
            spin_until(recorder, lambda: False, 1.0)  # let the subscriptions match
            _publish_frames(recorder, settings, camera_topic, waited, frame_count, summary, check_alive)
            for topic in waited:
                summary.outputs[topic] = len(recorder.received[topic])
                summary.missing[topic] = summary.frames - summary.outputs[topic]
            writer.write(REPLAY_SUMMARY, String(data=json.dumps(asdict(summary))), time.time_ns())
            recorder.destroy_node()
    finally:
        rclpy.try_shutdown()
    return summary


def _publish_frames(recorder: Recorder, settings: ReplaySettings, camera_topic: str, waited: list[str],
                    frame_count: int, summary: ReplaySummary, check_alive) -> None:
    started_wall, first_bag_time = time.monotonic(), None
    progress = tqdm(total=frame_count, desc='replay', unit='frame')
    for topic, msgtype, bag_time, data in read_raw(settings.bag):
        if topic != camera_topic:
            recorder.writer.write_raw(topic, msgtype, data, time.time_ns())  # ground truth, CameraInfo ...
            if topic == CAMERA_INFO:
                recorder.camera_info.publish(deserialize_message(data, message_class(msgtype)))
            continue
        msg = deserialize_message(data, message_class(msgtype))
        key = stamp_key(msg.header)
        recorder.record(settings.record)
        if settings.rate > 0:
            first_bag_time = bag_time if first_bag_time is None else first_bag_time
            due = started_wall + (bag_time - first_bag_time) / 1e9 / settings.rate
            spin_until(recorder, lambda: time.monotonic() >= due, max(0.0, due - time.monotonic()) + 1.0, check_alive)
        recorder.clock.publish(Clock(clock=msg.header.stamp))
        recorder.camera.publish(msg)
        recorder.writer.write_raw(topic, msgtype, data, time.time_ns())
        summary.frames += 1
        if settings.rate <= 0:
            spin_until(recorder, lambda: all(key in recorder.received[t] for t in waited),
                       settings.frame_timeout_sec, check_alive)
        progress.update()
    progress.close()
    # Recorded rate: the last frames' outputs are still on their way.
    spin_until(recorder, lambda: all(len(recorder.received[t]) >= summary.frames for t in waited),
               settings.frame_timeout_sec if settings.rate > 0 else 2.0, check_alive)


def start_pipeline_commands(config: Path, camera_topic: str, compressed: bool, overrides: list[str],
                            checkpoints: dict[str, str]) -> list[list[str]]:
    """The driving pipeline's node commands for replay: sim time, reliable input, the bag's camera
    transport; ``checkpoints`` maps launch-style arguments (semantic_checkpoint ...) to weights."""
    settings = ['use_sim_time:=true', 'input_reliability:=reliable',
                f'input_transport:={"compressed" if compressed else "raw"}'] + list(overrides)
    commands = []
    for node in DRIVING_PIPELINE:
        checkpoint = checkpoints.get(node.checkpoint_argument)
        node_settings = settings + ([f'checkpoint:={Path(checkpoint).resolve()}'] if checkpoint else [])
        commands.append(node_command(node, camera_topic, config, node_settings))
    return commands
