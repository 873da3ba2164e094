"""Replay a bag's cameras into the running nodes over real topics and record what they publish.

Every camera the bag has (image topics beside a CameraInfo topic), or the ones named, is
replayed on its own topic; with several cameras each one's outputs are awaited in its namespace
(``topics.camera_bag_topics``), as nodes with the same ``cameras`` list publish them.

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
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import rclpy
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String
from tqdm import tqdm

from seg_models.checkpoints.named import absolute_checkpoint
from seg_perception.bringup.driving_pipeline import DRIVING_PIPELINE, PANOPTIC_FUSION, TASKS, pipeline_nodes
from seg_perception.bringup.processes import node_command, spin_until
from seg_perception.evaluation.bag_io import BagWriter, cameras_in_bag, message_class, read_raw, require_topics
from seg_perception.messages.topics import (CLOCK, COMPRESSED_SUFFIX, DIAGNOSTICS, LABEL_INFO_QOS, LABEL_INFO_SUFFIX,
                                            RECORDED_BY_DEFAULT, REPLAY_SUMMARY, CameraBagTopics, stamp_key)

RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
DISCOVERY_SETTLE_SEC = 2.0
FINAL_DIAGNOSTICS_TIMEOUT_SEC = 10.0  # for each node's last /diagnostics status after the last frame
LOGGER = logging.getLogger(__name__)
CAMERA_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class ReplaySettings:
    bag: Path
    output: Path
    camera_topics: Sequence[str] = ()  # empty: every camera in the bag; each may be found as its /compressed variant
    rate: float = 0.0  # 0: back-pressure; > 0: this multiple of the recorded rate
    record: Sequence[str] = RECORDED_BY_DEFAULT  # besides every camera's predictions and their label_info
    frame_timeout_sec: float = 120.0
    startup_timeout_sec: float = 300.0
    storage: str = 'mcap'


@dataclass
class ReplaySummary:
    frames: int = 0  # camera frames published, every camera
    mode: str = ''
    cameras: dict[str, int] = field(default_factory=dict)  # camera topic -> frames published on it
    outputs: dict[str, int] = field(default_factory=dict)  # topic -> frames with that output
    missing: dict[str, int] = field(default_factory=dict)  # topic -> frames without it


class Recorder(Node):
    """Publishes the cameras (and /clock, CameraInfo) and records the nodes' outputs into a bag."""

    def __init__(self, cameras: Sequence[CameraBagTopics], camera_types: dict[str, type], writer: BagWriter) -> None:
        super().__init__('bag_replay')
        self.writer = writer
        self.cameras = {camera.camera: self.create_publisher(camera_types[camera.camera], camera.camera, CAMERA_QOS)
                        for camera in cameras}
        self.camera_infos = {camera.camera_info: self.create_publisher(CameraInfo, camera.camera_info, CAMERA_QOS)
                             for camera in cameras}
        self.clock = self.create_publisher(Clock, CLOCK, CAMERA_QOS)
        self.received: dict[str, set[tuple[int, int]]] = {}
        self.status_received: dict[str, float] = {}  # /diagnostics status name -> when it last came (monotonic)

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
        if topic == DIAGNOSTICS:
            self.status_received.update((status.name, time.monotonic()) for status in msg.status)
        header = getattr(msg, 'header', None)
        if header is not None:
            self.received[topic].add(stamp_key(header))


def camera_outputs(camera: CameraBagTopics, started_outputs: Optional[Sequence[str]]) -> list[str]:
    """The outputs a camera's frames may wait for: the nodes' predictions, and the panoptic node's
    where it was started; with ``started_outputs`` None (nodes started elsewhere) the predictions."""
    candidates = list(camera.predictions) + ([camera.panoptic_prediction] if started_outputs else [])
    return [topic for topic in candidates
            if started_outputs is None or any(topic.endswith('/' + output) for output in started_outputs)]


def _wait_for_nodes(recorder: Recorder, settings: ReplaySettings, cameras: Sequence[CameraBagTopics],
                    started_outputs: Optional[Sequence[str]], check_alive) -> dict[str, list[str]]:
    """Per camera, the outputs its frames wait for: those published. With ``started_outputs`` (the
    outputs of the nodes this process started, e.g. segmentation/semantic) each of those for every
    camera, else whichever appear first. Recording starts before the camera check: lazy nodes
    subscribe to a camera only once someone listens to its outputs."""
    expected = [topic for camera in cameras for topic in camera_outputs(camera, started_outputs)]

    def published() -> list[str]:
        return [topic for topic in expected if recorder.count_publishers(topic)]

    spin_until(recorder, lambda: len(published()) == len(expected) if started_outputs is not None else published(),
               settings.startup_timeout_sec, check_alive)
    spin_until(recorder, lambda: False, DISCOVERY_SETTLE_SEC)  # the rest of a node's topics, other nodes
    waited = published()
    if not waited:
        raise RuntimeError(f'no node publishes {" or ".join(expected)} within {settings.startup_timeout_sec:.0f} s: '
                           f'start the nodes (ros2 launch seg_perception driving.launch.py use_sim_time:=true, with '
                           f'cameras:=[...] for several cameras) or pass --start-pipeline')
    labels = [topic + LABEL_INFO_SUFFIX for topic in waited]
    recorder.record(list(dict.fromkeys(list(settings.record) + waited + labels)))
    outputs = {camera.camera: [topic for topic in camera_outputs(camera, started_outputs) if topic in waited]
               for camera in cameras}
    for camera in cameras:  # the nodes that subscribe to the camera (the panoptic node reads their outputs)
        nodes = {(info.node_namespace, info.node_name) for topic in outputs[camera.camera]
                 if topic in camera.predictions for info in recorder.get_publishers_info_by_topic(topic)}
        publisher = recorder.cameras[camera.camera]
        if not spin_until(recorder, lambda: publisher.get_subscription_count() >= len(nodes),
                          settings.startup_timeout_sec, check_alive):
            raise RuntimeError(f'the nodes publishing {", ".join(outputs[camera.camera])} never subscribed to '
                               f'{camera.camera}: check their cameras parameter (or camera remapping) and '
                               f'input_transport')
    return outputs


def replay(settings: ReplaySettings, check_alive=lambda: None,
           started_outputs: Optional[Sequence[str]] = None, on_frame=lambda: None) -> ReplaySummary:
    """Replay ``settings.bag`` into the running nodes; write the result bag; ``check_alive`` raises
    when nodes this process started have died; ``started_outputs`` are their outputs, all awaited;
    ``on_frame`` is called after each camera frame is answered (or given up on)."""
    available = require_topics(settings.bag, [])
    cameras = cameras_in_bag(available, settings.camera_topics)
    camera_types = {camera.camera: message_class(available[camera.camera][0]) for camera in cameras}
    frame_count = sum(available[camera.camera][1] for camera in cameras)
    summary = ReplaySummary(mode='back-pressure' if settings.rate <= 0 else f'{settings.rate:g}x recorded rate',
                            cameras={camera.camera: 0 for camera in cameras})
    rclpy.init()
    try:
        with BagWriter(settings.output, settings.storage) as writer:
            recorder = Recorder(cameras, camera_types, writer)
            waited = _wait_for_nodes(recorder, settings, cameras, started_outputs, check_alive)
            spin_until(recorder, lambda: False, 1.0)  # let the subscriptions match
            last_stamp = _publish_frames(recorder, settings, waited, frame_count, summary, check_alive, on_frame)
            _final_diagnostics(recorder, last_stamp, check_alive)
            for camera, topics in waited.items():
                for topic in topics:
                    summary.outputs[topic] = len(recorder.received[topic])
                    summary.missing[topic] = summary.cameras[camera] - summary.outputs[topic]
            writer.write(REPLAY_SUMMARY, String(data=json.dumps(asdict(summary))), time.time_ns())
            recorder.destroy_node()
    finally:
        rclpy.try_shutdown()
    return summary


def _final_diagnostics(recorder: Recorder, last_stamp: Optional[Time], check_alive) -> None:
    """Every node's /diagnostics status once more after the last frame's outputs, so the result bag
    ends with their final counts. Nodes on sim time only tick when /clock moves, and /clock stopped
    at the last frame: it is stepped on, a second at a time, until each status seen came again."""
    if last_stamp is None or not recorder.status_received:
        return
    since, step = time.monotonic(), [0]

    def all_reported() -> bool:
        if all(when > since for when in recorder.status_received.values()):
            return True
        step[0] += 1
        recorder.clock.publish(Clock(clock=Time(sec=last_stamp.sec + step[0], nanosec=last_stamp.nanosec)))
        return False

    if not spin_until(recorder, all_reported, FINAL_DIAGNOSTICS_TIMEOUT_SEC, check_alive):
        late = [name for name, when in recorder.status_received.items() if when <= since]
        LOGGER.warning('no final /diagnostics from %s within %.0f s: the report shows their earlier counts',
                       ', '.join(late), FINAL_DIAGNOSTICS_TIMEOUT_SEC)


def _publish_frames(recorder: Recorder, settings: ReplaySettings, waited: dict[str, list[str]], frame_count: int,
                    summary: ReplaySummary, check_alive, on_frame) -> Optional[Time]:
    """Publish every camera frame (and /clock) as the settings say; returns the last frame's stamp."""
    pace_origin = None  # (wall time, bag time) of the first camera frame: the recorded rate counts from it
    last_stamp = None
    progress = tqdm(total=frame_count, desc='replay', unit='frame')
    for topic, msgtype, bag_time, data in read_raw(settings.bag):
        if topic not in recorder.cameras:
            recorder.writer.write_raw(topic, msgtype, data, time.time_ns())  # ground truth, CameraInfo ...
            if topic in recorder.camera_infos:
                recorder.camera_infos[topic].publish(deserialize_message(data, message_class(msgtype)))
            continue
        msg = deserialize_message(data, message_class(msgtype))
        key = stamp_key(msg.header)
        recorder.record(settings.record)
        if settings.rate > 0:
            pace_origin = pace_origin or (time.monotonic(), bag_time)
            due = pace_origin[0] + (bag_time - pace_origin[1]) / 1e9 / settings.rate
            spin_until(recorder, lambda: time.monotonic() >= due, max(0.0, due - time.monotonic()) + 1.0, check_alive)
        sent = time.time_ns()  # the frame's time in the result bag: when it was sent, not when sending returned
        recorder.clock.publish(Clock(clock=msg.header.stamp))
        last_stamp = msg.header.stamp
        recorder.cameras[topic].publish(msg)
        recorder.writer.write_raw(topic, msgtype, data, sent)
        summary.frames += 1
        summary.cameras[topic] += 1
        if settings.rate <= 0:
            spin_until(recorder, lambda: all(key in recorder.received[t] for t in waited[topic]),
                       settings.frame_timeout_sec, check_alive)
        progress.update()
        on_frame()
    progress.close()
    # Recorded rate: the last frames' outputs are still on their way.
    spin_until(recorder, lambda: all(len(recorder.received[t]) >= summary.cameras[camera]
                                     for camera, topics in waited.items() for t in topics),
               settings.frame_timeout_sec if settings.rate > 0 else 2.0, check_alive)
    return last_stamp


def scoped_overrides(overrides: Sequence[str]) -> dict[str, list[str]]:
    """Per pipeline node, its ``NAME:=VALUE`` overrides: ``NAME:=VALUE`` goes to every node,
    ``NODE:NAME:=VALUE`` to that node only; a malformed override or unknown node is refused."""
    scoped: dict[str, list[str]] = {node.name: [] for node in DRIVING_PIPELINE + (PANOPTIC_FUSION,)}
    for override in overrides:
        name, separator, value = override.partition(':=')
        node, _, parameter = name.rpartition(':')
        if not separator or not parameter:
            raise ValueError(f'parameter override {override!r} is not NAME:=VALUE or NODE:NAME:=VALUE')
        if node and node not in scoped:
            raise ValueError(f'parameter override {override!r} names node {node!r}; the pipeline\'s nodes are '
                             f'{", ".join(scoped)}')
        for target in ([node] if node else scoped):
            scoped[target].append(f'{parameter}:={value}')
    return scoped


def start_pipeline_commands(config: Path, cameras: Sequence[CameraBagTopics], overrides: list[str],
                            checkpoints: dict[str, str], tasks: Sequence[str] = TASKS,
                            panoptic: bool = False) -> list[list[str]]:
    """The commands of the pipeline's nodes for ``tasks`` replaying ``cameras``: sim time, reliable
    input, the bag's camera transport; one camera as the default camera (remapped), several as the
    cameras parameter. ``checkpoints`` maps launch-style arguments (semantic_checkpoint ...) to
    weights. An override ``NAME:=VALUE`` goes to every node, ``NODE:NAME:=VALUE`` to that node only
    (e.g. semantic_segmentation:input_height:=256). ``panoptic`` adds the fusion node (both tasks
    needed); it takes the cameras and sim time, and ignores what it does not declare."""
    if panoptic and set(TASKS) - set(tasks):
        raise ValueError('the panoptic node fuses the semantic and instance results: replay both tasks')
    # replay waits for every node's answer before the next frame: a node answered before a slower one
    # is paced, not facing a silent camera
    settings = ['use_sim_time:=true', 'input_reliability:=reliable',
                f'input_timeout_sec:={ReplaySettings.frame_timeout_sec}']
    if len(cameras) == 1 and cameras[0].frame_prefix == 'frame':  # the classic names: the default camera
        compressed = cameras[0].camera.endswith(COMPRESSED_SUFFIX)
        camera_topic = cameras[0].camera[:-len(COMPRESSED_SUFFIX)] if compressed else cameras[0].camera
        settings.append(f'input_transport:={"compressed" if compressed else "raw"}')
    else:
        camera_topic = cameras[0].camera
        settings.append(f'cameras:=[{", ".join(camera.camera for camera in cameras)}]')
    nodes = pipeline_nodes(tasks) + ([PANOPTIC_FUSION] if panoptic else [])
    scoped = scoped_overrides(overrides)
    commands = []
    for node in nodes:
        checkpoint = checkpoints.get(node.checkpoint_argument) if node in DRIVING_PIPELINE else None
        node_settings = settings + scoped[node.name] + ([f'checkpoint:={absolute_checkpoint(checkpoint)}']
                                                        if checkpoint else [])
        commands.append(node_command(node, camera_topic, config, node_settings))
    return commands
