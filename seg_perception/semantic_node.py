"""Semantic segmentation node: camera images in, per-pixel class-id images out.

Subscribes:  image (sensor_msgs/Image, any supported encoding; remap to the camera topic), or
             image/compressed (sensor_msgs/CompressedImage) with input_transport: compressed
Publishes:   segmentation/semantic (sensor_msgs/Image mono8/mono16 class ids, camera resolution,
             header copied from the input image; 255 / 65535 = unlabeled)
             segmentation/semantic/confidence (mono8 0-255 or 32FC1 0..1; confidence_output)
             segmentation/semantic/label_info (seg_perception_msgs/LabelSet, transient local, once)
             ~/color, ~/overlay (rgb8 palette view, and palette blended with the camera image;
             computed only while subscribed)
             ~/processing_time (seg_perception_msgs/FrameTiming), /diagnostics
Input, worker, lazy mode, diagnostics and lifecycle: ``camera_pipeline``, shared with every node.
"""
from __future__ import annotations

from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import Image

from seg_models.labels import LABEL_SETS
from seg_models.semantic import (SEMANTIC_ARCHITECTURES, UNTRAINED_WARNING, SemanticModelConfig, SemanticResult,
                                 SemanticSegmenter, create_semantic_segmenter)
from seg_models.visualize import colorize, overlay
from seg_perception.camera_pipeline import CAMERA_PIPELINE_PARAMETERS, CameraFrame, Outputs
from seg_perception.image_conversion import array_to_image_msg, class_ids_to_image_msg, confidence_to_image_msg
from seg_perception.node_main import main_for
from seg_perception.parameters import BACKEND_PARAMETERS, ParameterSpec, network_input_size
from seg_perception.segmentation_node import ManagedSegmentationNode, NodeDefinition, SegmentationNode
from seg_perception.segmenter_processor import SegmenterProcessor
from seg_perception.topics import COLOR_OUTPUT, CONFIDENCE_OUTPUT, OVERLAY_OUTPUT, SEMANTIC_OUTPUT

NODE_NAME = 'semantic_segmentation'
CONFIDENCE_CHOICES = ('none', 'mono8', '32FC1')

SEMANTIC_MODEL_PARAMETERS = (
    ParameterSpec('architecture', 'deeplabv3plus_mobilenet_v3_large', 'DeepLabv3+ encoder variant.',
                  choices=SEMANTIC_ARCHITECTURES),
    ParameterSpec('output_stride', 16, 'Encoder output stride (8 is finer and slower; MobileNet: 16 only).',
                  choices=(8, 16)),
    ParameterSpec('label_set', 'cityscapes', 'Classes the network outputs.', choices=tuple(LABEL_SETS)),
    ParameterSpec('checkpoint', '', 'Weights file (.pth/.pt read with weights_only, or .safetensors). '
                                    'Empty: untrained weights, reported loudly.'),
    ParameterSpec('model_metadata', '', 'Bring your own model: metadata .yaml naming an ONNX file, its input '
                                        'size, normalisation and label set. Replaces architecture/checkpoint.'),
    ParameterSpec('confidence_output', 'none', 'Per-pixel confidence (top class probability) on '
                                               'segmentation/semantic/confidence: mono8 (0-255) or 32FC1 (0..1).',
                  choices=CONFIDENCE_CHOICES),
    ParameterSpec('confidence_threshold', 0.0, 'Pixels less confident than this are published as unlabeled '
                                               '(0: every pixel keeps its class).', value_range=(0.0, 1.0)),
    ParameterSpec('overlay_alpha', 0.5, 'Weight of the class colours in ~/overlay.', value_range=(0.0, 1.0)),
)

SEMANTIC_PARAMETERS = SEMANTIC_MODEL_PARAMETERS + BACKEND_PARAMETERS + CAMERA_PIPELINE_PARAMETERS


def semantic_config_from_parameters(values: dict[str, Any]) -> SemanticModelConfig:
    """Model configuration from the node's declared parameter values."""
    return SemanticModelConfig(
        architecture=values['architecture'], output_stride=values['output_stride'], label_set=values['label_set'],
        checkpoint=values['checkpoint'], backend=values['backend'], device=values['device'],
        precision=values['precision'], input_size=network_input_size(values), engine_dir=values['engine_dir'],
        calibration_images=values['calibration_images'], model_metadata=values['model_metadata'],
        with_confidence=values['confidence_output'] != 'none' or values['confidence_threshold'] > 0)


class SemanticProcessor(SegmenterProcessor):
    """The semantic model and its output messages, plugged into the camera pipeline."""

    untrained_warning = UNTRAINED_WARNING

    def __init__(self, node: Node, settings: dict[str, Any], outputs: Outputs) -> None:
        self._config = semantic_config_from_parameters(settings)
        super().__init__(node, settings)
        self.announce_label_set(SEMANTIC_OUTPUT, settings['confidence_threshold'])
        self._class_id_publisher = outputs.create(Image, SEMANTIC_OUTPUT)
        self._color_publisher = outputs.create(Image, COLOR_OUTPUT)
        self._overlay_publisher = outputs.create(Image, OVERLAY_OUTPUT)
        self._confidence_publisher = (outputs.create(Image, CONFIDENCE_OUTPUT)
                                      if settings['confidence_output'] != 'none' else None)

    def create_segmenter(self) -> SemanticSegmenter:
        return create_semantic_segmenter(self._config)

    def model_name(self) -> str:
        return self._config.model_metadata or self._config.architecture

    def publish_result(self, frame: CameraFrame, result: SemanticResult) -> None:
        result = result.unlabel_below(self._settings['confidence_threshold'], self.label_set.ignore_id)
        header = frame.header
        self._class_id_publisher.publish(class_ids_to_image_msg(result.class_ids, header))
        if self._confidence_publisher is not None and self._confidence_publisher.get_subscription_count():
            self._confidence_publisher.publish(
                confidence_to_image_msg(result.confidence, self._settings['confidence_output'], header))
        if self._color_publisher.get_subscription_count():
            self._color_publisher.publish(array_to_image_msg(colorize(result.class_ids, self.label_set), 'rgb8',
                                                             header))
        if self._overlay_publisher.get_subscription_count():
            blended = overlay(frame.rgb, result.class_ids, self.label_set, self._settings['overlay_alpha'])
            self._overlay_publisher.publish(array_to_image_msg(blended, 'rgb8', header))


SEMANTIC_NODE = NodeDefinition(NODE_NAME, SEMANTIC_PARAMETERS, SemanticProcessor)


class SemanticSegmentationNode(SegmentationNode):
    definition = SEMANTIC_NODE


class ManagedSemanticSegmentationNode(ManagedSegmentationNode):
    definition = SEMANTIC_NODE


def main() -> None:
    main_for(SemanticSegmentationNode)


if __name__ == '__main__':
    main()
