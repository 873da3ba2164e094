"""One camera of a segmentation node: its topics, output publishers, lazy subscription, statistics, status.

A node serves every camera of its ``cameras`` parameter from one model. ``camera_topics`` reads
that list once (names, transports, output namespaces, collisions refused); ``CameraInput`` gives
each camera a ``CameraChannel``, which puts the camera's frames into the shared newest-frame slots
and keeps everything else about that camera apart from the others: its outputs, whether anyone
listens to them (lazy mode, per camera), its counters, its silence and its /diagnostics status.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from seg_perception.messages.images import ImageConversionError, compressed_msg_to_rgb, image_msg_to_rgb
from seg_perception.messages.topics import (CAMERA_INPUT, COMPRESSED_SUFFIX, OUTPUT_QOS, camera_namespace, input_qos,
                                            output_in_namespace)
from seg_perception.runtime.camera_settings import CameraInputSettings
from seg_perception.runtime.camera_statistics import CameraStatistics, PublicationGaps
from seg_perception.runtime.diagnostics import (LARGE_IMAGES_HINT, CameraInputState, camera_input_status,
                                                input_silence_sec, silence_report)
from seg_perception.runtime.newest_frame import NewestFrameSlots
from seg_perception.runtime.parameters import ParameterValueError

LOST_WARNING_THROTTLE_SEC = 10.0

# The /diagnostics status keeps the name it has had since the first release: robot monitors and
# diagnostic aggregator configurations match on it. Named cameras add their input topic.
STATUS_NAME = '{node}: camera pipeline'


@dataclass(frozen=True)
class CameraTopics:
    """Where one camera's images come from and where its outputs go."""

    entry: str  # as listed in the cameras parameter
    input_topic: str  # resolved; ends in /compressed for sensor_msgs/CompressedImage
    compressed: bool
    output_namespace: Optional[str]  # None: the node's own output names (the default camera "image")

    def output(self, node_name: str, output: str) -> str:
        """The topic of ``output`` ('segmentation/semantic', '~/color') for this camera."""
        if self.output_namespace is None:
            return output
        return output_in_namespace(self.output_namespace, node_name, output)

    def status_name(self, node_name: str) -> str:
        name = STATUS_NAME.format(node=node_name)
        return name if self.output_namespace is None else f'{name} ({self.input_topic})'


def camera_topics(node: Node, entries: Sequence[str], input_transport: str) -> list[CameraTopics]:
    """The cameras of ``entries``: "image" (remapped by launch) keeps the node's output names; any
    other topic publishes into its own namespace. An entry ending in /compressed is a
    CompressedImage topic; ``input_transport: compressed`` makes every camera one. Refused: no
    camera, an invalid name, two cameras whose outputs would land on the same topics."""
    if not entries:
        raise ParameterValueError('cameras is empty: list at least one camera image topic (default: [image])')
    cameras = []
    for entry in entries:
        named_compressed = entry.endswith(COMPRESSED_SUFFIX)
        image_name = entry[:-len(COMPRESSED_SUFFIX)] if named_compressed else entry
        try:
            resolved = node.resolve_topic_name(image_name)
        except Exception as error:  # noqa: BLE001 - rclpy raises several kinds for invalid names
            raise ParameterValueError(f'cameras entry {entry!r} is not a valid topic name ({error})') from None
        compressed = named_compressed or input_transport == 'compressed'
        cameras.append(CameraTopics(entry, resolved + (COMPRESSED_SUFFIX if compressed else ''), compressed,
                                    None if image_name == CAMERA_INPUT else camera_namespace(resolved)))
    owners: dict[str, str] = {}
    for camera in cameras:
        namespace = camera.output_namespace or node.get_namespace()
        if namespace in owners:
            raise ParameterValueError(
                f'cameras {owners[namespace]!r} and {camera.entry!r} would publish their outputs into the same '
                f'namespace {namespace}: give each camera a namespace of its own (/front/image_raw, '
                f'/rear/image_raw)')
        owners[namespace] = camera.entry
    return cameras


class OutputPublishers:
    """One camera's output publishers, named by its topics; lazy mode asks whether anyone subscribes."""

    def __init__(self, node: Node, topics: CameraTopics, on_subscribers_changed: Callable[[], None]) -> None:
        self._node = node
        self.topics = topics
        self._on_subscribers_changed = on_subscribers_changed
        self._publishers: list[Publisher] = []

    def topic(self, output: str) -> str:
        return self.topics.output(self._node.get_name(), output)

    def create(self, msg_type: Any, output: str, qos: QoSProfile = OUTPUT_QOS) -> Publisher:
        callbacks = PublisherEventCallbacks(matched=lambda _info: self._on_subscribers_changed())
        publisher = self._node.create_publisher(msg_type, self.topic(output), qos, event_callbacks=callbacks)
        self._publishers.append(publisher)
        return publisher

    def any_subscribed(self) -> bool:
        return any(publisher.get_subscription_count() > 0 for publisher in self._publishers)

    def destroy(self) -> None:
        for publisher in self._publishers:
            self._node.destroy_publisher(publisher)
        self._publishers.clear()


class CameraChannel:
    """One camera: subscribed while the node is active and (lazy mode) its outputs have listeners."""

    def __init__(self, node: Node, topics: CameraTopics, settings: CameraInputSettings, slots: NewestFrameSlots,
                 is_active: Callable[[], bool], bridge: Any) -> None:
        self._node = node
        self.topics = topics
        self._settings = settings
        self._slots = slots
        self._is_active = is_active
        self._bridge = bridge
        self._log = node.get_logger()
        self.statistics = CameraStatistics(time.monotonic())
        self.outputs = OutputPublishers(node, topics, self.update_subscription)
        self._subscription = None
        self._subscribed_since = 0.0
        self._had_publisher = False  # a publisher was matched once: its going away is the camera stopping
        self._gaps = PublicationGaps()
        self._incompatible_qos: Optional[tuple[float, str]] = None  # (when, policy) of the last such event

    @property
    def input_topic(self) -> str:
        return self.topics.input_topic

    def describe(self) -> str:
        kind = 'CompressedImage' if self.topics.compressed else 'Image'
        outputs = 'the node\'s own output names' if self.topics.output_namespace is None else \
            f'outputs under {self.topics.output_namespace}'
        return f'{self.input_topic} ({kind}, {self._settings.input_reliability}; {outputs})'

    # --- subscription ---------------------------------------------------------------------------
    def update_subscription(self) -> None:
        """Subscribe while active and (unless lazy is off) someone listens to this camera's outputs."""
        active = self._is_active()
        wanted = active and (not self._settings.lazy or self.outputs.any_subscribed())
        if wanted and self._subscription is None:
            callbacks = SubscriptionEventCallbacks(
                message_lost=self._on_message_lost,
                incompatible_qos=self._on_incompatible_qos)
            # raw: the executor only copies the serialized frame; the worker deserializes the frames it
            # takes, so frames replaced in the slot (most of a 30 Hz camera's) cost no deserialization.
            self._subscription = self._node.create_subscription(
                self._msg_type, self.input_topic, self._on_message, input_qos(self._settings.input_reliability),
                event_callbacks=callbacks, raw=True)
            self._subscribed_since = time.monotonic()
            self._gaps = PublicationGaps()
            self.statistics.forget_unanswered()
            self._log.info(f'subscribed to {self.input_topic}')
        elif not wanted and self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None
            reason = 'inactive' if not active else 'nothing subscribes to its outputs (lazy)'
            self._log.info(f'unsubscribed from {self.input_topic}: {reason}')

    def _on_message_lost(self, info: Any) -> None:
        if not self._gaps.reported:  # else the sequence-number gaps count these frames too
            self.statistics.frames_lost(time.monotonic(), info.total_count_change)
        self._log.warning(f'{info.total_count} frames on {self.input_topic} lost in transport so far; '
                          f'{LARGE_IMAGES_HINT}', throttle_duration_sec=LOST_WARNING_THROTTLE_SEC)

    def _on_incompatible_qos(self, info: Any) -> None:
        # Not throttled: rclpy throttles per call site, which every camera shares; the event comes
        # once per mismatched publisher, not per frame.
        policy = info.last_policy_kind.name.removeprefix('RMW_QOS_POLICY_')
        self._incompatible_qos = (time.monotonic(), policy)
        self._log.warning(
            f'a publisher on {self.input_topic} offers QoS incompatible with this subscription '
            f'({policy}); its images never arrive. Set input_reliability to match it '
            f'(now {self._settings.input_reliability!r}).')

    def _on_message(self, serialized: bytes, info: dict) -> None:
        replaced = self._slots.put(self.input_topic, serialized)
        now = time.monotonic()
        self.statistics.frame_received(now, replaced)
        missed = self._gaps.missed(info)
        if missed:
            self.statistics.frames_lost(now, missed)

    @property
    def _msg_type(self) -> type:
        return CompressedImage if self.topics.compressed else Image

    def deserialize(self, serialized: bytes) -> Any:
        """The Image or CompressedImage a frame in the slot was received as."""
        try:
            return deserialize_message(serialized, self._msg_type)
        except Exception as error:  # noqa: BLE001 - rclpy raises several kinds for malformed CDR
            raise ImageConversionError('deserialize', f'{len(serialized)} bytes do not deserialize as '
                                                      f'{self._msg_type.__name__}: {error}') from None

    def convert(self, msg: Any) -> np.ndarray:
        """RGB uint8 of ``msg``; raises ImageConversionError for a bad image."""
        if self.topics.compressed:
            return compressed_msg_to_rgb(msg, self._settings.max_image_pixels)
        return image_msg_to_rgb(msg, self._settings.max_image_pixels, self._bridge)

    # --- health -----------------------------------------------------------------------------------
    def status(self, model: dict[str, str], trained: bool) -> tuple[DiagnosticStatus, Optional[str]]:
        """This camera's /diagnostics status, and what to log when its topic has been silent too long
        (the node logs every silent camera in one throttled line)."""
        self.update_subscription()  # also catches subscriber changes the matched events missed
        now = time.monotonic()
        snapshot = self.statistics.snapshot(now)
        silence, silent, silence_cause = None, None, None
        if self._subscription is not None:
            publishers = self._node.count_publishers(self.input_topic)
            self._had_publisher = self._had_publisher or publishers > 0
            silence, silent, silence_cause = silence_report(
                self.input_topic, input_silence_sec(now, self._subscribed_since, snapshot), self._settings,
                publishers, self._had_publisher, snapshot)
        qos_problem = None
        if self._incompatible_qos is not None:
            since = snapshot.seconds_since_input
            if since is None or now - since < self._incompatible_qos[0]:  # no image since the event
                qos_problem = (f'a publisher on {self.input_topic} offers incompatible QoS '
                               f'({self._incompatible_qos[1]}); set input_reliability to match it')
        serving = 'inactive' if not self._is_active() else ('active' if self._subscription is not None else 'idle')
        state = CameraInputState(serving=serving, input_topic=self.input_topic, input_silence_sec=silence,
                                 input_timeout_sec=self._settings.input_timeout_sec, trained=trained, model=model,
                                 qos_problem=qos_problem, silence_cause=silence_cause)
        return camera_input_status(self.topics.status_name(self._node.get_name()), model.get('device', ''),
                                   snapshot, state), silent
