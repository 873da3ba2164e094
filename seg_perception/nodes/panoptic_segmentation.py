"""Panoptic segmentation node: each camera's semantic and instance results of the same frame fused into one scene.

    ros2 run seg_perception panoptic_node   (or: python -m seg_perception.nodes.panoptic_segmentation)

Subscribes:  segmentation/semantic (sensor_msgs/Image mono8/mono16 class ids) and segmentation/instances
             (seg_perception_msgs/InstanceMaskArray), as the semantic and instance nodes publish them,
             and their transient-local label_info; per camera of the cameras parameter, by the same
             namespace rule as those nodes (camera /front/image_raw: /front/segmentation/...)
Publishes:   segmentation/panoptic (seg_perception_msgs/PanopticSegmentation, the inputs' header)
             segmentation/panoptic/label_info (seg_perception_msgs/LabelSet: the semantic label set,
             transient local, once both inputs' label sets are known)
             ~/color (rgb8: stuff in its class colour, each object in a shade of its class colour
             that follows its track; only while subscribed), ~/processing_time (FrameTiming; the
             fusion's time in inference_ms, the wait for the partner in queue_ms), /diagnostics

The two results of a frame are paired by exact stamp (``StampPairing``). Each network runs in its
own node at its own rate, so no second copy of a network is loaded; when one is slower the output
follows it, for the stamps both answered. A node answers a camera's frames in stamp order, so a
frame the other network has already passed will never find its partner: it is dropped at once and
counted, as are frames that waited longer than ``max_wait_sec`` or beyond ``max_pending``. A plain
node, not a lifecycle one: it holds no model or device memory worth releasing, and with ``lazy``
it does nothing (not even subscribe to its inputs, so the networks idle too) while nothing listens.
"""
from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.publisher import Publisher
from seg_perception_msgs.msg import FrameTiming, InstanceMaskArray, PanopticSegmentation
from seg_perception_msgs.msg import LabelSet as LabelSetMsg
from sensor_msgs.msg import Image

from seg_models.configs import PanopticSettings, build_config
from seg_models.data.labels import LabelSet
from seg_models.data.visualize import panoptic_colors
from seg_models.panoptic.fusion import fuse_panoptic, thing_class_map
from seg_perception.messages.images import ImageConversionError, array_to_image_msg, check_header
from seg_perception.messages.label_info import announce_label_set, label_set_from_msg, publish_label_set
from seg_perception.messages.panoptic import fusion_inputs, panoptic_to_msg
from seg_perception.messages.topics import (COLOR_OUTPUT, DIAGNOSTICS, DIAGNOSTICS_QOS, INSTANCE_OUTPUT,
                                            LABEL_INFO_QOS, LABEL_INFO_SUFFIX, OUTPUT_QOS, PANOPTIC_NODE,
                                            PANOPTIC_OUTPUT, PROCESSING_TIME_OUTPUT, SEMANTIC_OUTPUT, stamp_key,
                                            stamp_latency_ms)
from seg_perception.runtime.camera_channel import CameraTopics, OutputPublishers, camera_topics
from seg_perception.runtime.camera_settings import CameraInputSettings
from seg_perception.runtime.camera_statistics import CameraStatistics
from seg_perception.runtime.diagnostics import format_ms
from seg_perception.runtime.node_main import main_for
from seg_perception.runtime.parameters import ParameterSpec, declare_parameters
from seg_perception.runtime.throttled_log import ThrottledErrorLog

ERROR_THROTTLE_SEC = 5.0  # per kind of bad input, as the segmentation nodes
SEMANTIC, INSTANCES = 'semantic', 'instances'  # the two inputs of a pair

PANOPTIC_PARAMETERS = (
    ParameterSpec.of_field(PanopticSettings, 'overlap_threshold', 'An instance more than this part of which is '
                           'already taken by higher-scoring instances is left out (Panoptic FPN).',
                           value_range=(0.0, 1.0)),
    ParameterSpec.of_field(PanopticSettings, 'instance_score_threshold', 'Instances scoring below this are left '
                           'out; the thing pixels no instance takes are void.', value_range=(0.0, 1.0)),
    ParameterSpec.of_field(PanopticSettings, 'stuff_area_limit', 'Least pixels of a stuff segment at a 1024x2048 '
                           'camera, scaled to the camera\'s size; smaller stuff regions are void.',
                           value_range=(0, 2**31 - 1)),
    ParameterSpec('max_pending', 20, 'Frames of one camera waiting for their partner (the other network\'s '
                  'result of the same stamp), per input; beyond it the oldest is dropped. At least the faster '
                  'network\'s rate times the slower one\'s latency.', value_range=(1, 1000)),
    ParameterSpec('max_wait_sec', 5.0, 'Seconds a frame waits for its partner before it is dropped (a frame the '
                  'other network already passed is dropped at once).', value_range=(0.01, 3600.0)),
    ParameterSpec.of_field(CameraInputSettings, 'cameras', 'Cameras whose results are fused, named by their image '
                           'topics as the semantic and instance nodes\' cameras parameter names them. Default '
                           '[image]: segmentation/semantic and segmentation/instances in the node\'s namespace; '
                           'any other topic, e.g. /front/image_raw, fuses /front/segmentation/... into '
                           '/front/segmentation/panoptic.'),
    ParameterSpec.of_field(CameraInputSettings, 'lazy', 'Subscribe to a camera\'s inputs only while someone '
                           'subscribes to its outputs (the networks can then idle too); false: always.'),
    ParameterSpec.of_field(CameraInputSettings, 'diagnostics_period_sec', 'Period of the status on /diagnostics.',
                           value_range=(0.1, 60.0)),
)


@dataclass(frozen=True)
class Pair:
    """One frame's two results, and how long the first waited for the second."""

    semantic: Image
    instances: InstanceMaskArray
    waited_sec: float


class StampPairing:
    """Pairs one camera's semantic and instance messages by exact stamp (sec, nanosec).

    Each input comes from a node that answers a camera's frames in stamp order, so when one input
    delivers stamp T, the other's waiting frames stamped before T will never be paired, nor will a
    frame stamped before the other's last delivery: both are dropped at once. What waits is bounded
    by ``max_pending`` per input and by ``max_wait_sec``. ``unpaired`` counts the dropped by input.
    Plain Python, no ROS; times are given, so it is testable without sleeping."""

    def __init__(self, max_pending: int, max_wait_sec: float) -> None:
        self._max_pending = max_pending
        self._max_wait_sec = max_wait_sec
        self._pending: dict[str, OrderedDict[tuple[int, int], tuple[Any, float]]] = {
            SEMANTIC: OrderedDict(), INSTANCES: OrderedDict()}
        self._last: dict[str, Optional[tuple[int, int]]] = {SEMANTIC: None, INSTANCES: None}
        self.unpaired: Counter[str] = Counter()

    def add(self, side: str, stamp: tuple[int, int], msg: Any, now: float) -> Optional[Pair]:
        """``msg`` of input ``side`` (SEMANTIC or INSTANCES) stamped ``stamp``: the pair once both came."""
        other = INSTANCES if side == SEMANTIC else SEMANTIC
        self._last[side] = stamp  # the last, not the greatest: a stamp going back (a bag looping) starts over
        waiting = self._pending[other]
        self._drop(other, [key for key in waiting if key < stamp])
        partner = waiting.pop(stamp, None)
        if partner is not None:
            partner_msg, arrived = partner
            semantic, instances = (msg, partner_msg) if side == SEMANTIC else (partner_msg, msg)
            return Pair(semantic, instances, now - arrived)
        if self._last[other] is not None and stamp < self._last[other]:
            self.unpaired[side] += 1
            return None
        own = self._pending[side]
        own.pop(stamp, None)  # the same stamp again: the newer message counts
        own[stamp] = (msg, now)
        while len(own) > self._max_pending:
            own.popitem(last=False)
            self.unpaired[side] += 1
        return None

    def expire(self, now: float) -> None:
        """Drop the frames that waited longer than ``max_wait_sec``."""
        for side, waiting in self._pending.items():
            self._drop(side, [key for key, (_, arrived) in waiting.items() if now - arrived > self._max_wait_sec])

    def waiting(self) -> int:
        return sum(len(waiting) for waiting in self._pending.values())

    def clear(self) -> None:
        """Forget what waits (unsubscribed: no partner will come), without counting it."""
        for waiting in self._pending.values():
            waiting.clear()
        self._last = dict.fromkeys(self._last)

    def _drop(self, side: str, keys: list[tuple[int, int]]) -> None:
        for key in keys:
            del self._pending[side][key]
        self.unpaired[side] += len(keys)


class PanopticCamera:
    """One camera: its inputs and their label sets, the pairing, the fusion, its outputs and status."""

    def __init__(self, node: Node, topics: CameraTopics, values: dict[str, Any], timing: Publisher,
                 errors: ThrottledErrorLog) -> None:
        self._node = node
        self.topics = topics
        self._settings = build_config(PanopticSettings, values)
        self._lazy = values['lazy']
        self._timing = timing
        self._errors = errors
        self._log = node.get_logger()
        self.outputs = OutputPublishers(node, topics, self.update_subscriptions)
        self._panoptic = self.outputs.create(PanopticSegmentation, PANOPTIC_OUTPUT)
        self._color = self.outputs.create(Image, COLOR_OUTPUT)
        self.input_topics = {side: node.resolve_topic_name(self.outputs.topic(output))
                             for side, output in ((SEMANTIC, SEMANTIC_OUTPUT), (INSTANCES, INSTANCE_OUTPUT))}
        self._label_sets: dict[str, Optional[LabelSetMsg]] = {SEMANTIC: None, INSTANCES: None}
        self._label_info = [node.create_subscription(LabelSetMsg, topic + LABEL_INFO_SUFFIX,
                                                     lambda msg, side=side: self._on_label_set(side, msg),
                                                     LABEL_INFO_QOS)
                            for side, topic in self.input_topics.items()]
        self._label_info_publisher: Optional[Publisher] = None
        self._semantic_label_set: Optional[LabelSet] = None
        self._instance_label_set: Optional[LabelSet] = None
        self._thing_map: Optional[np.ndarray] = None
        self._label_problem: Optional[str] = None
        self._inputs: list = []
        self.pairing = StampPairing(values['max_pending'], values['max_wait_sec'])
        self._waiting_for_labels: deque[Pair] = deque()
        self._max_pending = values['max_pending']
        self.dropped_waiting_for_labels = 0
        self.statistics = CameraStatistics(time.monotonic())
        self.update_subscriptions()

    @property
    def name(self) -> str:
        return self.topics.input_topic

    # --- inputs -----------------------------------------------------------------------------------
    def update_subscriptions(self) -> None:
        """Subscribe to both inputs while someone listens to the outputs (or always, lazy off)."""
        wanted = not self._lazy or self.outputs.any_subscribed()
        if wanted and not self._inputs:
            self._inputs = [self._node.create_subscription(msg_type, self.input_topics[side],
                                                           lambda msg, side=side: self._on_result(side, msg),
                                                           OUTPUT_QOS)
                            for side, msg_type in ((SEMANTIC, Image), (INSTANCES, InstanceMaskArray))]
            self._log.info(f'subscribed to {self.input_topics[SEMANTIC]} and {self.input_topics[INSTANCES]}')
        elif not wanted and self._inputs:
            for subscription in self._inputs:
                self._node.destroy_subscription(subscription)
            self._inputs = []
            self.pairing.clear()
            self._waiting_for_labels.clear()
            self._log.info(f'unsubscribed from {self.input_topics[SEMANTIC]} and {self.input_topics[INSTANCES]}: '
                           f'nothing subscribes to the panoptic outputs (lazy)')

    def _on_label_set(self, side: str, msg: LabelSetMsg) -> None:
        self._label_sets[side] = msg
        semantic, instances = self._label_sets[SEMANTIC], self._label_sets[INSTANCES]
        if semantic is None or instances is None:
            return
        self._semantic_label_set, self._instance_label_set = label_set_from_msg(semantic), label_set_from_msg(instances)
        try:
            self._thing_map, self._label_problem = thing_class_map(self._instance_label_set,
                                                                   self._semantic_label_set), None
        except ValueError as error:
            self._thing_map, self._label_problem = None, str(error)
            self._log.error(f'{self.name}: cannot fuse: {error}')
        if self._label_problem is None:
            self._announce(max(instances.threshold, self._settings.instance_score_threshold))
        while self._waiting_for_labels:
            self._fuse(self._waiting_for_labels.popleft())

    def _announce(self, threshold: float) -> None:
        """The panoptic output's label set (the semantic one), on its transient-local label_info."""
        if self._label_info_publisher is None:
            self._label_info_publisher = announce_label_set(self._node, self.outputs.topic(PANOPTIC_OUTPUT),
                                                            self._semantic_label_set, threshold)
            return
        publish_label_set(self._node, self._label_info_publisher, self._semantic_label_set, threshold)

    def _on_result(self, side: str, msg: Any) -> None:
        now = time.monotonic()
        try:
            check_header(msg.header)
        except ImageConversionError as error:
            self._refuse(error.kind, f'{self.input_topics[side]}: {error}')
            return
        pair = self.pairing.add(side, stamp_key(msg.header), msg, now)
        if pair is None:
            return
        self.statistics.frame_received(now, False)
        if self.missing_label_info():
            self._waiting_for_labels.append(pair)
            if len(self._waiting_for_labels) > self._max_pending:
                self._waiting_for_labels.popleft()
                self.dropped_waiting_for_labels += 1
            return
        self._fuse(pair)

    def missing_label_info(self) -> list[str]:
        return [self.input_topics[side] + LABEL_INFO_SUFFIX for side, msg in self._label_sets.items() if msg is None]

    # --- fusion -----------------------------------------------------------------------------------
    def _refuse(self, kind: str, message: str) -> None:
        self.statistics.input_error(time.monotonic(), kind)
        self._errors.error(kind, message)

    def _fuse(self, pair: Pair) -> None:
        """Fuse and publish one pair; a pair that cannot be fused is refused in one throttled line."""
        header = pair.semantic.header
        if self._label_problem is not None:  # logged once when the label sets came
            self.statistics.input_error(time.monotonic(), 'label_sets')
            return
        started = time.perf_counter()
        try:
            class_ids, instances = fusion_inputs(pair.semantic, pair.instances, self._semantic_label_set,
                                                 self._instance_label_set)
            converted = time.perf_counter()
            result = fuse_panoptic(class_ids, instances, self._thing_map, self._semantic_label_set, self._settings)
            answer = panoptic_to_msg(result, header, self._semantic_label_set)  # refuses ids beyond mono16
        except (ImageConversionError, ValueError) as error:
            kind = error.kind if isinstance(error, ImageConversionError) else 'fusion'
            self._refuse(kind, f'{self.name}: frame {header.stamp.sec}.{header.stamp.nanosec:09d} (frame_id '
                               f'{header.frame_id!r}) not fused: {error}')
            return
        fused = time.perf_counter()
        self._panoptic.publish(answer)
        if self._color.get_subscription_count():
            self._color.publish(array_to_image_msg(panoptic_colors(result, self._semantic_label_set), 'rgb8', header))
        published = time.perf_counter()
        latency_ms = stamp_latency_ms(self._node.get_clock().now().nanoseconds, header.stamp)
        processing_ms = (published - started) * 1e3
        self.statistics.frame_published(time.monotonic(), latency_ms, processing_ms)
        received, _ = self.statistics.totals()
        self._timing.publish(FrameTiming(
            header=header, camera=self.name, latency_ms=math.nan if latency_ms is None else latency_ms,
            queue_ms=pair.waited_sec * 1e3, conversion_ms=(converted - started) * 1e3,
            inference_ms=(fused - converted) * 1e3, backend_ms=math.nan, publish_ms=(published - fused) * 1e3,
            batch_size=1, frames_received=received, frames_dropped=sum(self.pairing.unpaired.values())))

    # --- health -----------------------------------------------------------------------------------
    def status(self) -> DiagnosticStatus:
        """This camera's /diagnostics status: pairs fused, frames dropped unpaired, what is missing."""
        self.update_subscriptions()  # also catches subscriber changes the matched events missed
        now = time.monotonic()
        self.pairing.expire(now)
        snapshot = self.statistics.snapshot(now)
        missing = self.missing_label_info()
        rates = f'{snapshot.output_rate_hz:.1f} Hz fused'
        errors = ', '.join(f'{kind} x{count}' for kind, count in sorted(snapshot.recent_errors.items()))
        state = 'active' if self._inputs else 'idle'
        if self._label_problem is not None:  # a configuration error: said even while idle
            level, message = DiagnosticStatus.ERROR, f'cannot fuse: {self._label_problem}'
        elif not self._inputs:
            level, message = DiagnosticStatus.OK, 'idle: nothing subscribes to the outputs (lazy mode)'
        elif missing:
            state, level = 'waiting for label_info', DiagnosticStatus.WARN
            message = f'waiting for label_info on {", ".join(missing)}; frames wait'
        elif errors:
            level = DiagnosticStatus.ERROR if snapshot.output_rate_hz == 0 else DiagnosticStatus.WARN
            message = f'pairs not fused ({errors}); {rates}'
        else:
            level, message = DiagnosticStatus.OK, rates
        label_sets = ' + '.join(f'{msg.name}' for msg in self._label_sets.values() if msg is not None)
        values = {
            'state': state,
            'semantic input': self.input_topics[SEMANTIC],
            'instance input': self.input_topics[INSTANCES],
            'output rate (Hz)': f'{snapshot.output_rate_hz:.2f}',
            'latency p50 (ms)': format_ms(snapshot.latency_p50_ms),
            'latency p95 (ms)': format_ms(snapshot.latency_p95_ms),
            'processing p50 (ms)': format_ms(snapshot.processing_p50_ms),
            'pairs received': str(snapshot.frames_received),
            'frames published': str(snapshot.frames_published),
            'semantic frames dropped unpaired': str(self.pairing.unpaired[SEMANTIC]),
            'instance frames dropped unpaired': str(self.pairing.unpaired[INSTANCES]),
            'frames waiting for their partner': str(self.pairing.waiting()),
            'pairs waiting for label_info': str(len(self._waiting_for_labels)),
            'pairs dropped waiting for label_info': str(self.dropped_waiting_for_labels),
            'missing label_info': ', '.join(missing),
            'pairs not fused': str(snapshot.input_errors),
            'label sets': label_sets,
        }
        return DiagnosticStatus(level=level, name=self.topics.status_name(self._node.get_name()), message=message,
                                values=[KeyValue(key=key, value=value) for key, value in values.items()])

    def destroy(self) -> None:
        for subscription in self._inputs + self._label_info:
            self._node.destroy_subscription(subscription)
        self._inputs, self._label_info = [], []
        if self._label_info_publisher is not None:
            self._node.destroy_publisher(self._label_info_publisher)
            self._label_info_publisher = None
        self.outputs.destroy()


class PanopticSegmentationNode(Node):
    """Declares the parameters, serves every camera of ``cameras`` and reports their status."""

    def __init__(self, **kwargs) -> None:
        super().__init__(PANOPTIC_NODE, **kwargs)
        self.cameras: list[PanopticCamera] = []
        values = declare_parameters(self, PANOPTIC_PARAMETERS)
        errors = ThrottledErrorLog(self.get_logger().error, ERROR_THROTTLE_SEC)
        self._timing = self.create_publisher(FrameTiming, PROCESSING_TIME_OUTPUT, OUTPUT_QOS)
        self._diagnostics = self.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)
        self.cameras = [PanopticCamera(self, topics, values, self._timing, errors)
                        for topics in camera_topics(self, values['cameras'], 'raw')]
        # Wall time: with use_sim_time a paused or slow bag replay must not stop the health reports.
        self.create_timer(values['diagnostics_period_sec'], self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        fused = '; '.join(f'{camera.input_topics[SEMANTIC]} + {camera.input_topics[INSTANCES]} -> '
                          f"{self.resolve_topic_name(camera.outputs.topic(PANOPTIC_OUTPUT))}"
                          for camera in self.cameras)
        self.get_logger().info(f'fusing {fused}; lazy: {values["lazy"]}')

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray(status=[camera.status() for camera in self.cameras])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def destroy_node(self) -> None:
        for camera in self.cameras:
            camera.destroy()
        self.cameras = []
        super().destroy_node()

    @classmethod
    def main(cls) -> None:  # executable: panoptic_node
        main_for(cls, __doc__, lambda: PANOPTIC_PARAMETERS)


if __name__ == '__main__':
    PanopticSegmentationNode.main()
