"""What the semantic and the instance node share: one lifecycle node around a camera input and a model.

``SegmentationNode`` is a lifecycle (managed) node. With ``autostart`` (the default) it configures
and activates itself at start, so ``ros2 run``, launch files and the runner get a serving node;
with ``autostart:=false`` it waits for ``ros2 lifecycle set`` or a lifecycle manager:

* configure: load the model or engine, create every camera's output publishers, announce the
  label set beside each camera's main output;
* activate: start the inference worker and subscribe to the cameras (lazily);
* deactivate: unsubscribe, stop the worker, release the model and its GPU memory;
* cleanup: destroy the publishers.

The node owns a ``CameraInput`` (runtime: every camera of its ``cameras`` parameter) and a
``SegmenterProcessor`` (the task: one segmenter for all cameras, and each camera's output
messages), as Autoware's TensorRT nodes own their detector. A task subclasses
``SegmenterProcessor`` for its outputs and ``SegmentationNode`` only to name itself, its
parameters, its processor and its main output (class attributes, read by the constructor).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Optional, Sequence

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from seg_models.backends.base import release_device_memory, release_host_memory
from seg_models.configs import build_config
from seg_models.data.labels import LabelSet
from seg_perception.messages.label_info import announce_label_set
from seg_perception.runtime.camera_channel import OutputPublishers
from seg_perception.runtime.camera_input import CameraFrame, CameraInput, StageTimes
from seg_perception.runtime.camera_settings import CAMERA_INPUT_PARAMETERS, CameraInputSettings
from seg_perception.runtime.node_main import STARTUP_ERRORS, main_for
from seg_perception.runtime.parameters import BACKEND_PARAMETERS, ParameterSpec, declare_parameters

AUTOSTART = ParameterSpec('autostart', True, 'Configure and activate at start (ros2 run, launch); false: wait for '
                                             'lifecycle transitions (ros2 lifecycle set, a lifecycle manager).')


LARGE_FRAME_PIXELS = 1920 * 1080  # above this, a frame's buffers are handed back to the system after it

class SegmenterProcessor:
    """A task's model and outputs: loads its segmenter (again after a deactivate), warns loudly about
    untrained weights, releases it with its accelerator memory, describes it for /diagnostics,
    announces the label set once, and publishes every frame's results.

    Subclasses build their segmenter (``create_segmenter``), create one camera's publishers
    (``create_outputs``) and fill them (``publish_result``); all three are called from lifecycle
    transitions, never from a constructor. Subclasses set ``config`` (a seg_models model config).
    """

    config: Any  # SemanticModelConfig or InstanceModelConfig

    def __init__(self, node: Node, model_name: str, label_info_threshold: float) -> None:
        self._node = node
        self.model_name = model_name
        self._label_info_threshold = label_info_threshold
        self.segmenter = None
        self.is_trained = False
        self._description: dict[str, str] = {}
        self._camera_publishers: dict[str, Any] = {}  # camera input topic -> what create_outputs returned
        self._label_info_publishers = []

    def create_segmenter(self) -> Any:
        """A SemanticSegmenter or InstanceSegmenter from the processor's config."""
        raise NotImplementedError

    def create_outputs(self, outputs: OutputPublishers) -> Any:
        """Create one camera's output publishers through ``outputs`` (which names them for the camera
        and which lazy mode watches); returns them, as ``publish_result`` takes them."""
        raise NotImplementedError

    def publish_result(self, publishers: Any, frame: CameraFrame, result: Any) -> None:
        """Publish every output of one frame's result on its camera's ``publishers``."""
        raise NotImplementedError

    @property
    def max_batch(self) -> int:
        """Frames per model call at most: every camera's newest frame in one batch, up to this."""
        return self.config.deployment.max_batch

    @property
    def label_set(self) -> LabelSet:
        return self.segmenter.label_set

    def configure(self, cameras: Sequence[OutputPublishers], main_output: str) -> None:
        """Load the model, create each camera's outputs and announce the label set on each camera's
        ``<main_output>/label_info``."""
        self.load()
        for outputs in cameras:
            self._camera_publishers[outputs.topics.input_topic] = self.create_outputs(outputs)
            self._label_info_publishers.append(announce_label_set(
                self._node, outputs.topic(main_output), self.label_set, self._label_info_threshold))

    def load(self) -> None:
        if self.segmenter is not None:
            return
        self.segmenter = self.create_segmenter()
        self.is_trained = self.segmenter.is_trained  # untrained: seg_models said so loudly, once
        backend = self.segmenter.backend
        self._description = {
            'backend': backend.name, 'device': backend.device, 'precision': backend.precision,
            'model': self.model_name, 'weights': self.segmenter.weights_source or 'untrained',
            'label set': self.segmenter.label_set.name}
        self._node.get_logger().info(f'model {self.model_name}, label set {self.segmenter.label_set.name}, '
                                     f'backend {backend.describe()}')

    def frame_problem(self, size: tuple[int, int]) -> Optional[str]:
        """Why the model does not run a frame of ``size``, or None (e.g. too large at camera size)."""
        check = getattr(self.segmenter, 'frame_problem', None)
        return check(size) if check is not None else None

    def process(self, frames: Sequence[CameraFrame]) -> StageTimes:
        """One batched model call for all frames (one per camera), then each frame's outputs; after a
        large frame the freed heap goes back to the system (glibc keeps it otherwise)."""
        started = time.perf_counter()
        results = self.segmenter.segment([frame.rgb for frame in frames])
        inferred = time.perf_counter()
        for frame, result in zip(frames, results):
            self.publish_result(self._camera_publishers[frame.camera], frame, result)
        if max(frame.rgb.shape[0] * frame.rgb.shape[1] for frame in frames) > LARGE_FRAME_PIXELS:
            del results
            release_host_memory()
        return StageTimes(inference_ms=(inferred - started) * 1e3, backend_ms=self.segmenter.backend_time.ms,
                          publish_ms=(time.perf_counter() - inferred) * 1e3)

    def release(self) -> None:
        self.segmenter = None
        release_device_memory()

    def description(self) -> dict[str, str]:
        """backend, device, model, weights, precision, label set: for /diagnostics."""
        return self._description

    def destroy(self) -> None:
        """Drop the label-set publishers (the camera outputs belong to the camera input)."""
        for publisher in self._label_info_publishers:
            self._node.destroy_publisher(publisher)
        self._label_info_publishers.clear()
        self._camera_publishers.clear()


class SegmentationNode(LifecycleNode):
    """Declares the task's parameters (plus backend, camera input and autostart), builds the task's
    processor from them, and runs the lifecycle."""

    node_name: str  # default node name (its section in config/driving.yaml)
    task_parameters: Sequence[ParameterSpec]  # the task's own parameters, declared first
    processor_type: type  # processor_type(node, parameter values) -> SegmenterProcessor
    main_output: str  # the topic whose /label_info announces the label set
    # None until the constructor built them: a parameter refused before that leaves nothing to drop
    # when rclpy's shutdown destroys the half-built node.
    processor: Optional[SegmenterProcessor] = None
    camera: Optional[CameraInput] = None

    def __init__(self, *, autostart: Optional[bool] = None, **kwargs) -> None:
        """``autostart`` overrides the parameter's default (the lifecycle executables start unconfigured)."""
        super().__init__(self.node_name, **kwargs)
        autostart_spec = AUTOSTART if autostart is None else ParameterSpec(AUTOSTART.name, autostart,
                                                                           AUTOSTART.description)
        values = declare_parameters(self, self.declared_parameters(autostart_spec))
        self.processor = self.processor_type(self, values)
        self.camera = CameraInput(self, build_config(CameraInputSettings, values), self.processor)
        self._autostarting = bool(values['autostart'])
        self._configure_error: Optional[Exception] = None
        if self._autostarting:
            self._start()

    def _start(self) -> None:
        """configure + activate now; a configure failure stops start-up with its error (logged once,
        by the executable, as 'cannot start: ...')."""
        self.trigger_configure()
        if self._configure_error is not None:
            raise self._configure_error
        self.trigger_activate()
        self._autostarting = False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = None
        try:
            self.processor.configure(self.camera.outputs, self.main_output)
        except STARTUP_ERRORS as error:
            if not self._autostarting:
                self.get_logger().error(f'configure failed: {error}')
            self._configure_error = error
            self._drop_outputs()
            return TransitionCallbackReturn.FAILURE
        self.camera.configure()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.processor.load()  # again after a deactivate released it
        except STARTUP_ERRORS as error:
            self.get_logger().error(f'activate failed: {error}')
            return TransitionCallbackReturn.FAILURE
        self.camera.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.camera.deactivate()
        self.processor.release()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_outputs()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_outputs()
        return TransitionCallbackReturn.SUCCESS

    def _drop_outputs(self) -> None:
        if self.camera is None or self.processor is None:
            return
        self.camera.cleanup()
        self.processor.release()
        self.processor.destroy()

    def destroy_node(self) -> None:
        self._drop_outputs()
        super().destroy_node()

    @classmethod
    def declared_parameters(cls, autostart: ParameterSpec = AUTOSTART) -> tuple[ParameterSpec, ...]:
        """Every parameter the node declares, in order: its task's, the backend's, the cameras', autostart."""
        return tuple(cls.task_parameters) + BACKEND_PARAMETERS + CAMERA_INPUT_PARAMETERS + (autostart,)

    @classmethod
    def main(cls) -> None:
        """The executable (``semantic_node``, ``instance_node``): autostart as its parameter says."""
        main_for(cls, sys.modules[cls.__module__].__doc__, cls.declared_parameters)

    @classmethod
    def main_unconfigured(cls) -> None:
        """``*_lifecycle_node``: the same node waiting for lifecycle transitions (autostart false)."""
        unconfigured = ParameterSpec(AUTOSTART.name, False, AUTOSTART.description)
        main_for(lambda: cls(autostart=False), sys.modules[cls.__module__].__doc__,
                 lambda: cls.declared_parameters(unconfigured))
