"""Semantic segmentation node: camera images in, per-pixel class-id images out.

    ros2 run seg_perception semantic_node [--ros-args -p autostart:=false]

Subscribes:  image (sensor_msgs/Image, any supported encoding; remap to the camera topic), or
             image/compressed (sensor_msgs/CompressedImage) with input_transport: compressed;
             or every topic of the cameras parameter, each camera's outputs in its namespace
Publishes:   segmentation/semantic (sensor_msgs/Image mono8/mono16 class ids, camera resolution,
             header copied from the input image; the label set's ignore id = unlabeled)
             segmentation/semantic/confidence (mono8 0-255 or 32FC1 0..1; confidence_output)
             segmentation/semantic/label_info (seg_perception_msgs/LabelSet, transient local, once)
             ~/color, ~/overlay (rgb8 palette view, and palette blended with the camera image;
             computed only while subscribed)
             ~/processing_time (seg_perception_msgs/FrameTiming), /diagnostics
Camera input, worker, lazy mode and diagnostics: ``runtime.camera_input``; lifecycle and autostart:
``nodes.segmentation_node``; both shared with the instance node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import Image

from seg_models.configs import SemanticModelConfig, build_config
from seg_models.data.labels import LABEL_SETS
from seg_models.data.visualize import colorize, overlay
from seg_models.segmenters.semantic import (SEMANTIC_ARCHITECTURES, SemanticResult,
                                            SemanticSegmenter, create_semantic_segmenter)
from seg_perception.messages.images import array_to_image_msg, class_ids_to_image_msg, confidence_to_image_msg
from seg_perception.messages.topics import (COLOR_OUTPUT, CONFIDENCE_OUTPUT, OVERLAY_OUTPUT, SEMANTIC_NODE,
                                            SEMANTIC_OUTPUT)
from seg_perception.nodes.segmentation_node import SegmentationNode, SegmenterProcessor
from seg_perception.runtime.camera_channel import OutputPublishers
from seg_perception.runtime.camera_input import CameraFrame
from seg_perception.runtime.parameters import ParameterSpec, input_size_from_parameters, max_batch_parameter

CONFIDENCE_CHOICES = ('none', 'mono8', '32FC1')

SEMANTIC_PARAMETERS = (
    ParameterSpec.of_field(SemanticModelConfig, 'architecture', 'DeepLabv3+ encoder variant.',
                           choices=SEMANTIC_ARCHITECTURES),
    ParameterSpec.of_field(SemanticModelConfig, 'output_stride', 'Encoder output stride (8 is finer and slower; '
                                                                 'MobileNet: 16 only).', choices=(8, 16)),
    ParameterSpec.of_field(SemanticModelConfig, 'label_set', 'Classes the network outputs.',
                           choices=tuple(LABEL_SETS)),
    ParameterSpec.of_field(SemanticModelConfig, 'checkpoint', 'Weights file (.pth/.pt read with weights_only, or '
                                                              '.safetensors), or a named checkpoint (seg-models '
                                                              'weights list), fetched once into the cache. Empty: '
                                                              'the demo model, or untrained weights, reported '
                                                              'loudly.'),
    ParameterSpec.of_field(SemanticModelConfig, 'model_metadata', 'Bring your own model: metadata .yaml naming an '
                                                                  'ONNX file, its input size, normalisation and '
                                                                  'label set. Replaces architecture/checkpoint.'),
    ParameterSpec('confidence_output', 'none', 'Per-pixel confidence (top class probability) on '
                                               'segmentation/semantic/confidence: mono8 (0-255) or 32FC1 (0..1).',
                  choices=CONFIDENCE_CHOICES),
    ParameterSpec('confidence_threshold', 0.0, 'Pixels less confident than this are published as unlabeled '
                                               '(0: every pixel keeps its class).', value_range=(0.0, 1.0)),
    ParameterSpec('overlay_alpha', 0.5, 'Weight of the class colours in ~/overlay.', value_range=(0.0, 1.0)),
    max_batch_parameter(SemanticModelConfig, 'Camera frames per model call at most (the newest of each camera; '
                                             'the TensorRT profile\'s largest batch).'),
)


def semantic_config_from_parameters(values: dict[str, Any]) -> SemanticModelConfig:
    """Model configuration from the node's declared parameter values."""
    return build_config(SemanticModelConfig, values, input_size=input_size_from_parameters(values),
                        with_confidence=values['confidence_output'] != 'none' or values['confidence_threshold'] > 0)


@dataclass(frozen=True)
class SemanticPublishers:
    """One camera's semantic outputs."""

    class_ids: Publisher
    color: Publisher
    overlay: Publisher
    confidence: Optional[Publisher]


class SemanticProcessor(SegmenterProcessor):
    """The semantic model and its output messages."""

    config_from_parameters = staticmethod(semantic_config_from_parameters)
    answer_type = Image  # what its main output carries

    def __init__(self, node: Node, values: dict[str, Any]) -> None:
        self.config = self.config_from_parameters(values)
        super().__init__(node, self.config.model_metadata or self.config.architecture,
                         self.config.output_filter.confidence_threshold)
        self._confidence_encoding = values['confidence_output']
        self._overlay_alpha = values['overlay_alpha']

    def create_segmenter(self) -> SemanticSegmenter:
        return create_semantic_segmenter(self.config)

    def create_outputs(self, outputs: OutputPublishers) -> SemanticPublishers:
        return SemanticPublishers(
            class_ids=outputs.create(Image, SEMANTIC_OUTPUT), color=outputs.create(Image, COLOR_OUTPUT),
            overlay=outputs.create(Image, OVERLAY_OUTPUT),
            confidence=outputs.create(Image, CONFIDENCE_OUTPUT) if self._confidence_encoding != 'none' else None)

    def publish_result(self, publishers: SemanticPublishers, frame: CameraFrame, result: SemanticResult) -> None:
        header = frame.header
        publishers.class_ids.publish(class_ids_to_image_msg(result.class_ids, header))
        if publishers.confidence is not None and publishers.confidence.get_subscription_count():
            publishers.confidence.publish(confidence_to_image_msg(result.confidence, self._confidence_encoding,
                                                                  header))
        if publishers.color.get_subscription_count():
            publishers.color.publish(array_to_image_msg(colorize(result.class_ids, self.label_set), 'rgb8', header))
        if publishers.overlay.get_subscription_count():
            blended = overlay(frame.rgb, result.class_ids, self.label_set, self._overlay_alpha)
            publishers.overlay.publish(array_to_image_msg(blended, 'rgb8', header))


class SemanticSegmentationNode(SegmentationNode):  # executables: semantic_node, semantic_lifecycle_node
    node_name, task_parameters, main_output = SEMANTIC_NODE, SEMANTIC_PARAMETERS, SEMANTIC_OUTPUT
    processor_type = SemanticProcessor


if __name__ == '__main__':
    SemanticSegmentationNode.main()
