"""The camera side of every segmentation node: input in, batches to the model, timing and health out.

A node hands ``CameraInput`` its processor (the model and its output messages); this module does the
rest, the same way for every node:

* subscribes to ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage), the
  image_transport names, resolved through the node's remappings;
* hands frames to an inference worker thread through a newest-frame slot per camera
  (``newest_frame``): the executor keeps receiving while the model runs, older frames are dropped
  and counted, so there is never a backlog;
* converts any supported encoding (``messages.images``) and refuses bad images with a throttled
  error naming the problem; nothing is published for them;
* lazy mode: while nothing subscribes to any output, it does not even subscribe to the camera;
* publishes ``~/processing_time`` (FrameTiming) per frame and a status on ``/diagnostics``;
* follows the node's lifecycle: configure (publishers, diagnostics timer), activate (worker,
  subscription), deactivate (unsubscribe, stop the worker), cleanup.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from seg_perception_msgs.msg import FrameTiming
from std_msgs.msg import Header

from seg_perception.messages.images import (DEFAULT_MAX_PIXELS, ImageConversionError, compressed_msg_to_rgb,
                                            cv_bridge_if_installed, image_msg_to_rgb)
from seg_perception.messages.topics import (CAMERA_INPUT, COMPRESSED_SUFFIX, DIAGNOSTICS, DIAGNOSTICS_QOS,
                                            OUTPUT_QOS, PROCESSING_TIME_OUTPUT, RELIABILITY_CHOICES,
                                            TRANSPORT_CHOICES, input_qos)
from seg_perception.runtime.camera_statistics import CameraStatistics
from seg_perception.runtime.diagnostics import CameraInputState, camera_input_status
from seg_perception.runtime.newest_frame import NewestFrameSlots, PendingFrame
from seg_perception.runtime.parameters import ParameterSpec
from seg_perception.runtime.throttled_log import ThrottledErrorLog

ERROR_THROTTLE_SEC = 5.0  # per kind of bad input (ThrottledErrorLog: rclpy throttles per call site only)
WARNING_THROTTLE_SEC = 10.0
WORKER_POLL_SEC = 0.25
# The /diagnostics status keeps the name it has had since the first release: robot monitors and
# diagnostic aggregator configurations match on it.
STATUS_NAME = '{node}: camera pipeline'


@dataclass(frozen=True)
class CameraInputSettings:
    """How a node takes its camera: transport, QoS, limits, lazy mode, health reporting."""

    input_transport: str = 'raw'
    input_reliability: str = 'best_effort'
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    lazy: bool = True
    diagnostics_period_sec: float = 1.0
    input_timeout_sec: float = 5.0


CAMERA_INPUT_PARAMETERS = tuple(ParameterSpec.of_field(CameraInputSettings, name, description, **options)
                                for name, description, options in (
    ('input_transport', 'raw: sensor_msgs/Image on "image"; compressed: sensor_msgs/CompressedImage (JPEG/PNG) on '
                        '"image/compressed". Remap "image" to the camera topic either way.',
     {'choices': TRANSPORT_CHOICES}),
    ('input_reliability', 'QoS reliability of the camera subscription: best_effort (sensor data) for live cameras, '
                          'reliable for bag replay. Either way only the newest frame is kept.',
     {'choices': RELIABILITY_CHOICES}),
    ('max_image_pixels', 'Images with more pixels are refused with an error.', {'value_range': (1, 2**31 - 1)}),
    ('lazy', 'Run nothing (not even the camera subscription) while no one subscribes to any output; false: always '
             'run.', {}),
    ('diagnostics_period_sec', 'Period of the status on /diagnostics.', {'value_range': (0.1, 60.0)}),
    ('input_timeout_sec', 'Subscribed but no image for this long: warning in the log and on /diagnostics (missing '
                          'or misnamed camera topic).', {'value_range': (0.1, 3600.0)}),
))


@dataclass(frozen=True)
class CameraFrame:
    """A converted camera image and the header of the message it came in."""

    rgb: np.ndarray  # (H, W, 3) uint8
    header: Header


@dataclass(frozen=True)
class StageTimes:
    """Time a processor spent on one batch."""

    inference_ms: float
    publish_ms: float


class OutputPublishers:
    """A node's output publishers; lazy mode asks whether anyone subscribes to any of them."""

    def __init__(self, node: Node, on_subscribers_changed: Callable[[], None]) -> None:
        self._node = node
        self._on_subscribers_changed = on_subscribers_changed
        self._publishers: list[Publisher] = []

    def create(self, msg_type: Any, topic: str, qos: QoSProfile = OUTPUT_QOS) -> Publisher:
        callbacks = PublisherEventCallbacks(matched=lambda _info: self._on_subscribers_changed())
        publisher = self._node.create_publisher(msg_type, topic, qos, event_callbacks=callbacks)
        self._publishers.append(publisher)
        return publisher

    def any_subscribed(self) -> bool:
        return any(publisher.get_subscription_count() > 0 for publisher in self._publishers)

    def destroy(self) -> None:
        for publisher in self._publishers:
            self._node.destroy_publisher(publisher)
        self._publishers.clear()


class CameraInput:
    """Owned by a segmentation node; ``processor`` runs the model on batches of ``CameraFrame`` and
    publishes the results (``process(frames) -> StageTimes``), and describes itself for /diagnostics
    (``is_trained``, ``description()``)."""

    def __init__(self, node: Node, settings: CameraInputSettings, processor: Any) -> None:
        self._node = node
        self._settings = settings
        self._processor = processor
        self._log = node.get_logger()
        self._errors = ThrottledErrorLog(self._log.error, ERROR_THROTTLE_SEC)
        self._bridge = cv_bridge_if_installed()
        self._compressed = settings.input_transport == 'compressed'
        self.input_topic = node.resolve_topic_name(CAMERA_INPUT) + (COMPRESSED_SUFFIX if self._compressed else '')
        self._slots = NewestFrameSlots()
        self.statistics = CameraStatistics(time.monotonic())
        self.outputs = OutputPublishers(node, self._update_input_subscription)
        self._active = False
        self._subscription = None
        self._subscribed_since = 0.0
        self._worker: Optional[threading.Thread] = None
        self._timing_publisher = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None

    # --- lifecycle -------------------------------------------------------------------------------
    def configure(self) -> None:
        """Create the timing and diagnostics publishers (the processor creates its outputs)."""
        self._timing_publisher = self._node.create_publisher(FrameTiming, PROCESSING_TIME_OUTPUT, OUTPUT_QOS)
        self._diagnostics_publisher = self._node.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)
        # Wall time: with use_sim_time a paused or slow bag replay must not stop the health reports.
        self._diagnostics_timer = self._node.create_timer(self._settings.diagnostics_period_sec,
                                                          self._publish_diagnostics,
                                                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        converter = 'cv_bridge' if self._bridge is not None else 'seg_perception.messages.images'
        self._log.info(f'input {self.input_topic} ({"CompressedImage" if self._compressed else "Image"}, '
                       f'{self._settings.input_reliability}, converted by {converter}); lazy: {self._settings.lazy}')

    def activate(self) -> None:
        self.statistics.restart_windows(time.monotonic())
        self._slots.reopen()
        self._active = True
        self._worker = threading.Thread(target=self._work, name='inference_worker', daemon=True)
        self._worker.start()
        self._update_input_subscription()

    def deactivate(self) -> None:
        self._active = False
        self._update_input_subscription()
        self._slots.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def cleanup(self) -> None:
        if self._active:
            self.deactivate()
        if self._diagnostics_timer is not None:
            self._node.destroy_timer(self._diagnostics_timer)
        for publisher in (self._timing_publisher, self._diagnostics_publisher):
            if publisher is not None:
                self._node.destroy_publisher(publisher)
        self._diagnostics_timer = self._timing_publisher = self._diagnostics_publisher = None
        self.outputs.destroy()

    # --- input ------------------------------------------------------------------------------------
    def _wants_input(self) -> bool:
        return self._active and (not self._settings.lazy or self.outputs.any_subscribed())

    def _update_input_subscription(self) -> None:
        """Subscribe to the camera while active and (unless lazy is off) someone listens."""
        wanted = self._wants_input()
        if wanted and self._subscription is None:
            callbacks = SubscriptionEventCallbacks(
                message_lost=lambda info: self.statistics.frames_lost(info.total_count_change),
                incompatible_qos=self._on_incompatible_qos)
            self._subscription = self._node.create_subscription(
                CompressedImage if self._compressed else Image, self.input_topic, self._on_message,
                input_qos(self._settings.input_reliability), event_callbacks=callbacks)
            self._subscribed_since = time.monotonic()
            self._log.info(f'subscribed to {self.input_topic}')
        elif not wanted and self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None
            reason = 'inactive' if not self._active else 'nothing subscribes to the outputs (lazy)'
            self._log.info(f'unsubscribed from {self.input_topic}: {reason}')

    def _on_incompatible_qos(self, info: Any) -> None:
        self._log.warning(
            f'a publisher on {self.input_topic} offers QoS incompatible with this subscription '
            f'({info.last_policy_kind.name}); its images never arrive. Set input_reliability to match it '
            f'(now {self._settings.input_reliability!r}).', throttle_duration_sec=WARNING_THROTTLE_SEC)

    def _on_message(self, msg: Any) -> None:
        replaced = self._slots.put(self.input_topic, msg)
        self.statistics.frame_received(time.monotonic(), replaced)

    # --- worker -----------------------------------------------------------------------------------
    def _work(self) -> None:
        while self._active:
            pending = self._slots.take(WORKER_POLL_SEC)
            if pending:
                self._process(pending)

    def _convert(self, msg: Any) -> np.ndarray:
        if self._compressed:
            return compressed_msg_to_rgb(msg, self._settings.max_image_pixels, self._bridge)
        return image_msg_to_rgb(msg, self._settings.max_image_pixels, self._bridge)

    def _process(self, pending: list[PendingFrame]) -> None:
        taken = time.monotonic()
        accepted: list[tuple[PendingFrame, CameraFrame, float]] = []
        for item in pending:
            started = time.perf_counter()
            try:
                rgb = self._convert(item.msg)
            except ImageConversionError as error:
                self.statistics.input_error(time.monotonic(), error.kind)
                self._errors.error(error.kind, f'dropped image on {self.input_topic} '
                                               f'(frame_id {item.msg.header.frame_id!r}): {error}')
                continue
            accepted.append((item, CameraFrame(rgb, item.msg.header), (time.perf_counter() - started) * 1e3))
        if not accepted:
            return
        try:
            times = self._processor.process([frame for _, frame, _ in accepted])
        except Exception as error:  # noqa: BLE001 - a failing batch must not end the worker
            self._errors.error('inference', f'inference failed, frames dropped: {type(error).__name__}: {error}')
            return
        now = self._node.get_clock().now()
        received, dropped = self.statistics.totals()
        for item, frame, conversion_ms in accepted:
            latency_ms = (now - Time.from_msg(frame.header.stamp, clock_type=now.clock_type)).nanoseconds / 1e6
            processing_ms = conversion_ms + times.inference_ms + times.publish_ms
            self.statistics.frame_published(time.monotonic(), latency_ms, processing_ms)
            self._timing_publisher.publish(FrameTiming(
                header=frame.header, latency_ms=latency_ms, queue_ms=(taken - item.received) * 1e3,
                conversion_ms=conversion_ms, inference_ms=times.inference_ms, publish_ms=times.publish_ms,
                batch_size=len(accepted), frames_received=received, frames_dropped=dropped))

    # --- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        self._update_input_subscription()  # also catches subscriber changes the matched events missed
        now = time.monotonic()
        snapshot = self.statistics.snapshot(now)
        silence = None
        if self._subscription is not None:
            silence = now - self._subscribed_since
            if snapshot.seconds_since_input is not None:
                silence = min(silence, snapshot.seconds_since_input)
            if silence > self._settings.input_timeout_sec:
                publishers = self._node.count_publishers(self.input_topic)
                self._log.warning(f'no images on {self.input_topic} for {silence:.0f} s ({publishers} publishers '
                                  f'on it)', throttle_duration_sec=WARNING_THROTTLE_SEC)
        serving = 'inactive' if not self._active else ('active' if self._subscription is not None else 'idle')
        model = self._processor.description()
        state = CameraInputState(serving=serving, input_topic=self.input_topic, input_silence_sec=silence,
                                 input_timeout_sec=self._settings.input_timeout_sec,
                                 trained=self._processor.is_trained, model=model)
        status = camera_input_status(STATUS_NAME.format(node=self._node.get_name()), model.get('device', ''),
                                     snapshot, state)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(array)
