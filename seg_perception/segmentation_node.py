"""The two node shapes every segmentation node comes in, around one ``CameraPipeline``.

``SegmentationNode`` loads its model and serves from construction (``ros2 run``, launch).
``ManagedSegmentationNode`` is the lifecycle (managed) variant: configure loads the model or
engine, activate subscribes, deactivate stops inference and frees the GPU, cleanup destroys the
publishers. A concrete node only names its ``NodeDefinition``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from seg_perception.camera_pipeline import CameraPipeline, ProcessorFactory
from seg_perception.node_main import STARTUP_ERRORS
from seg_perception.parameters import ParameterSpec, declare_parameters


@dataclass(frozen=True)
class NodeDefinition:
    name: str  # default node name (the key of its section in config/driving.yaml)
    parameters: tuple[ParameterSpec, ...]  # declared once, in this order
    make_processor: ProcessorFactory


class SegmentationNode(Node):
    definition: NodeDefinition

    def __init__(self, **kwargs) -> None:
        super().__init__(self.definition.name, **kwargs)
        self.pipeline = CameraPipeline(self, declare_parameters(self, self.definition.parameters),
                                       self.definition.make_processor)
        self.pipeline.configure()
        self.pipeline.activate()

    def destroy_node(self) -> None:
        self.pipeline.cleanup()
        super().destroy_node()


class ManagedSegmentationNode(LifecycleNode):
    definition: NodeDefinition

    def __init__(self, **kwargs) -> None:
        super().__init__(self.definition.name, **kwargs)
        self._settings = declare_parameters(self, self.definition.parameters)
        self.pipeline: Optional[CameraPipeline] = None

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        pipeline = CameraPipeline(self, self._settings, self.definition.make_processor)
        try:
            pipeline.configure()
        except STARTUP_ERRORS as error:
            self.get_logger().error(f'configure failed: {error}')
            pipeline.cleanup()
            return TransitionCallbackReturn.FAILURE
        self.pipeline = pipeline
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline.activate()
        except STARTUP_ERRORS as error:
            self.get_logger().error(f'activate failed: {error}')
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.pipeline.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_pipeline()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_pipeline()
        return TransitionCallbackReturn.SUCCESS

    def _drop_pipeline(self) -> None:
        if self.pipeline is not None:
            self.pipeline.cleanup()
            self.pipeline = None

    def destroy_node(self) -> None:
        self._drop_pipeline()
        super().destroy_node()
