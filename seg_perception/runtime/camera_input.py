"""The camera side of every segmentation node: inputs in, batches to the model, timing and health out.

A node hands ``CameraInput`` its processor (the model and its output messages); this module does the
rest, the same way for every node and for any number of cameras (the ``cameras`` parameter):

* one ``CameraChannel`` per camera (``camera_channel``): ``image`` (sensor_msgs/Image) or
  ``image/compressed`` (CompressedImage) as image_transport names them, resolved through the node's
  remappings, or any listed camera topic with its outputs in that camera's namespace;
* hands frames to one inference worker thread through a newest-frame slot per camera
  (``newest_frame``): the executor keeps receiving while the model runs, older frames are dropped
  and counted per camera, so there is never a backlog; the worker runs the newest frame of every
  waiting camera as one batch of at most ``max_batch`` (cameras take turns beyond that);
* converts any supported encoding (``messages.images``) and refuses bad images with a throttled
  error naming the problem; nothing is published for them;
* lazy mode, per camera: while nothing subscribes to a camera's outputs, it is not even subscribed;
* publishes ``~/processing_time`` (FrameTiming) per frame, a status per camera on ``/diagnostics``
  and one for the shared model (batch sizes);
* follows the node's lifecycle: configure (publishers, diagnostics timer), activate (worker,
  subscriptions), deactivate (unsubscribe, stop the worker), cleanup.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from seg_perception_msgs.msg import FrameTiming
from std_msgs.msg import Header

from seg_perception.messages.images import ImageConversionError, check_header, cv_bridge_if_installed
from seg_perception.messages.topics import (DIAGNOSTICS, DIAGNOSTICS_QOS, OUTPUT_QOS, PROCESSING_TIME_OUTPUT,
                                            stamp_latency_ms)
from seg_perception.runtime.camera_channel import CameraChannel, OutputPublishers, camera_topics
from seg_perception.runtime.camera_settings import CameraInputSettings
from seg_perception.runtime.diagnostics import inference_status
from seg_perception.runtime.newest_frame import NewestFrameSlots, PendingFrame
from seg_perception.runtime.throttled_log import ThrottledErrorLog

ERROR_THROTTLE_SEC = 5.0  # per kind of bad input (ThrottledErrorLog: rclpy throttles per call site only)
WARNING_THROTTLE_SEC = 10.0
WORKER_POLL_SEC = 0.25
INFERENCE_STATUS_NAME = '{node}: inference'  # the shared model: backend, batch sizes


@dataclass(frozen=True)
class CameraFrame:
    """A converted camera image, the header of the message it came in, and its camera."""

    rgb: np.ndarray  # (H, W, 3) uint8
    header: Header
    camera: str  # the camera's input topic: which outputs the result goes to


@dataclass(frozen=True)
class StageTimes:
    """Time a processor spent on one batch."""

    inference_ms: float
    backend_ms: float  # of inference_ms, the backend's own calls (NaN where not separable)
    publish_ms: float


class CameraInput:
    """Owned by a segmentation node; ``processor`` runs the model on batches of ``CameraFrame`` and
    publishes the results (``process(frames) -> StageTimes``), and describes itself for /diagnostics
    (``is_trained``, ``description()``), says how many frames one model call takes at most
    (``max_batch``) and which frames it does not run (``frame_problem(size)``)."""

    def __init__(self, node: Node, settings: CameraInputSettings, processor: Any) -> None:
        self._node = node
        self._settings = settings
        self._processor = processor
        self._max_batch = processor.max_batch
        self._log = node.get_logger()
        self._errors = ThrottledErrorLog(self._log.error, ERROR_THROTTLE_SEC)
        self._bridge = cv_bridge_if_installed()
        self._slots = NewestFrameSlots()
        self.cameras: dict[str, CameraChannel] = {}
        for topics in camera_topics(node, settings.cameras, settings.input_transport):
            self.cameras[topics.input_topic] = CameraChannel(node, topics, settings, self._slots,
                                                             lambda: self._active, self._bridge)
        self._batch_sizes: Counter[int] = Counter()
        self._batch_lock = threading.Lock()
        self._active = False
        self._worker: Optional[threading.Thread] = None
        self._timing_publisher = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None

    @property
    def outputs(self) -> list[OutputPublishers]:
        """Each camera's output publishers, for the processor to fill."""
        return [channel.outputs for channel in self.cameras.values()]

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
        inputs = ', '.join(channel.describe() for channel in self.cameras.values())
        self._log.info(f'input {inputs}; converted by {converter}; lazy: {self._settings.lazy}; '
                       f'up to {self._max_batch} frames per model call')

    def activate(self) -> None:
        for channel in self.cameras.values():
            channel.statistics.restart_windows(time.monotonic())
        self._slots.reopen()
        self._active = True
        self._worker = threading.Thread(target=self._work, name='inference_worker', daemon=True)
        self._worker.start()
        self._update_subscriptions()

    def deactivate(self) -> None:
        self._active = False
        self._update_subscriptions()
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
        for outputs in self.outputs:
            outputs.destroy()

    def _update_subscriptions(self) -> None:
        for channel in self.cameras.values():
            channel.update_subscription()

    # --- worker -----------------------------------------------------------------------------------
    def _work(self) -> None:
        while self._active:
            pending = self._slots.take(WORKER_POLL_SEC, self._max_batch)
            if not pending:
                continue
            try:
                self._process(pending)
            except Exception as error:  # noqa: BLE001 - nothing one batch holds may end the worker
                self._not_answered(pending, 'internal', f'frames dropped, processing failed: '
                                                        f'{type(error).__name__}: {error}')

    def _not_answered(self, pending: list[PendingFrame], kind: str, message: str) -> None:
        now = time.monotonic()
        for item in pending:
            self.cameras[item.source].statistics.input_error(now, kind)
        if self._node.context.ok():  # else shutting down (Ctrl-C): the publishers are gone, nothing to say
            self._errors.error(kind, message)

    def _process(self, pending: list[PendingFrame]) -> None:
        taken = time.monotonic()
        accepted: list[tuple[PendingFrame, CameraFrame, float]] = []
        for item in pending:
            channel = self.cameras[item.source]
            started = time.perf_counter()
            try:
                msg = channel.deserialize(item.msg)
                check_header(msg.header)
                rgb = channel.convert(msg)
                problem = self._processor.frame_problem(rgb.shape[:2])
                if problem:
                    raise ImageConversionError('too_large_for_network', problem)
            except ImageConversionError as error:
                frame_id = msg.header.frame_id if error.kind != 'deserialize' else '?'
                self._not_answered([item], error.kind, f'dropped image on {channel.input_topic} '
                                                       f'(frame_id {frame_id!r}): {error}')
                continue
            frame = CameraFrame(rgb, msg.header, item.source)
            accepted.append((item, frame, (time.perf_counter() - started) * 1e3))
        if not accepted:
            return
        try:
            times = self._processor.process([frame for _, frame, _ in accepted])
        except Exception as error:  # noqa: BLE001 - a failing batch must not end the worker
            self._not_answered([item for item, _, _ in accepted], 'inference',
                               f'inference failed, frames dropped: {type(error).__name__}: {error}')
            return
        with self._batch_lock:
            self._batch_sizes[len(accepted)] += 1
        now_ns = self._node.get_clock().now().nanoseconds
        for item, frame, conversion_ms in accepted:
            statistics = self.cameras[item.source].statistics
            latency_ms = stamp_latency_ms(now_ns, frame.header.stamp)
            implausible = latency_ms is None and (frame.header.stamp.sec or frame.header.stamp.nanosec)
            if implausible:
                self._log.warning(f'camera {item.source} stamps images {_seconds(now_ns, frame.header.stamp)} from '
                                  f'this node\'s clock (time since boot? an unsynchronised clock?): no latency is '
                                  f'computed for them', throttle_duration_sec=WARNING_THROTTLE_SEC)
            processing_ms = conversion_ms + times.inference_ms + times.publish_ms
            statistics.frame_published(time.monotonic(), latency_ms, processing_ms, bool(implausible))
            received, dropped = statistics.totals()
            self._timing_publisher.publish(FrameTiming(
                header=frame.header, camera=item.source, latency_ms=math.nan if latency_ms is None else latency_ms,
                queue_ms=(taken - item.received) * 1e3, conversion_ms=conversion_ms,
                inference_ms=times.inference_ms, backend_ms=times.backend_ms, publish_ms=times.publish_ms,
                batch_size=len(accepted), frames_received=received, frames_dropped=dropped))

    # --- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        model, trained = self._processor.description(), self._processor.is_trained
        statuses, silent = [], []
        for channel in self.cameras.values():
            status, silence = channel.status(model, trained)
            statuses.append(status)
            if silence:
                silent.append(silence)
        if silent:
            self._log.warning('; '.join(silent), throttle_duration_sec=WARNING_THROTTLE_SEC)
        with self._batch_lock:
            batch_sizes = dict(self._batch_sizes)
        statuses.append(inference_status(INFERENCE_STATUS_NAME.format(node=self._node.get_name()), batch_sizes,
                                         self._max_batch, len(self.cameras), self._active, trained, model))
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(array)


def _seconds(now_ns: int, stamp) -> str:
    """How far an image stamp is from the node's clock, in words."""
    offset = (now_ns - (stamp.sec * 10**9 + stamp.nanosec)) / 1e9
    return f'{abs(offset):.0f} s {"behind" if offset > 0 else "ahead of"}'
