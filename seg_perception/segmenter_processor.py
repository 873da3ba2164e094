"""What every model-running ``FrameProcessor`` shares: the segmenter's life and its announcements.

A subclass builds its segmenter (``create_segmenter``) and publishes its outputs; this base loads
it (again after a lifecycle deactivate), says loudly when the weights are untrained, releases it
with its accelerator memory, describes it for /diagnostics, and announces the label set once on
its transient-local topic.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from rclpy.node import Node

from seg_models.backends.base import release_device_memory
from seg_models.labels import LabelSet
from seg_perception.camera_pipeline import CameraFrame, StageTimes
from seg_perception.label_info import announce_label_set


class SegmenterProcessor:
    untrained_warning = ''  # the model's warning text, shown framed in stars when no checkpoint is given

    def __init__(self, node: Node, settings: dict[str, Any]) -> None:
        self._node = node
        self._settings = settings
        self.segmenter = None
        self.is_trained = False
        self._description: dict[str, str] = {}
        self._label_info_publisher = None
        self.load()
        self.label_set: LabelSet = self.segmenter.label_set

    def create_segmenter(self) -> Any:
        """A SemanticSegmenter or InstanceSegmenter from ``self._settings``."""
        raise NotImplementedError

    def model_name(self) -> str:
        raise NotImplementedError

    def publish_result(self, frame: CameraFrame, result: Any) -> None:
        """Publish every output of one frame's result."""
        raise NotImplementedError

    def process(self, frames: Sequence[CameraFrame]) -> StageTimes:
        """One batched model call for all frames, then each frame's outputs."""
        started = time.perf_counter()
        results = self.segmenter.segment([frame.rgb for frame in frames])
        inferred = time.perf_counter()
        for frame, result in zip(frames, results):
            self.publish_result(frame, result)
        return StageTimes(inference_ms=(inferred - started) * 1e3, publish_ms=(time.perf_counter() - inferred) * 1e3)

    def load(self) -> None:
        if self.segmenter is not None:
            return
        self.segmenter = self.create_segmenter()
        self.is_trained = self.segmenter.is_trained
        if not self.is_trained:
            self._node.get_logger().warning('*' * 20 + ' ' + self.untrained_warning + ' ' + '*' * 20)
        backend = self.segmenter.backend
        self._description = {
            'backend': backend.name, 'device': backend.device, 'precision': backend.precision,
            'model': self.model_name(), 'weights': self.segmenter.weights_source or 'untrained',
            'label set': self.segmenter.label_set.name}
        self._node.get_logger().info(f'model {self.model_name()}, label set {self.segmenter.label_set.name}, '
                                     f'backend {backend.describe()}')

    def release(self) -> None:
        self.segmenter = None
        release_device_memory()

    def model_description(self) -> dict[str, str]:
        return self._description

    def announce_label_set(self, output_topic: str, threshold: float = 0.0) -> None:
        """Publish the label set once, reliable + transient local, on ``<output_topic>/label_info``."""
        self._label_info_publisher = announce_label_set(self._node, output_topic, self.label_set, threshold)

    def destroy(self) -> None:
        if self._label_info_publisher is not None:
            self._node.destroy_publisher(self._label_info_publisher)
            self._label_info_publisher = None
