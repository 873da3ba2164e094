"""Semantic segmentation node: camera images in, per-pixel class-id images out.

Subscribes:  image (sensor_msgs/Image; remap to the camera topic)
Publishes:   segmentation/semantic (sensor_msgs/Image mono8/mono16 class ids, camera resolution,
             header copied from the input image)
             segmentation/semantic/label_info (seg_perception_msgs/LabelSet, transient local, once)
             ~/color (sensor_msgs/Image rgb8 palette view, computed only while subscribed)
"""
from __future__ import annotations

from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import Image
from seg_perception_msgs.msg import LabelSet as LabelSetMsg

from seg_models.labels import LABEL_SETS
from seg_models.backends.base import PRECISIONS
from seg_models.backends.factory import BACKENDS
from seg_models.semantic import (SEMANTIC_ARCHITECTURES, UNTRAINED_WARNING, SemanticModelConfig,
                                 create_semantic_segmenter)
from seg_models.visualize import colorize
from seg_perception.image_conversion import (DEFAULT_MAX_PIXELS, ImageConversionError, array_to_image_msg,
                                             class_ids_to_image_msg, image_msg_to_rgb)
from seg_perception.label_info import LABEL_INFO_QOS, LABEL_INFO_SUFFIX, label_set_to_msg
from seg_perception.node_main import main_for
from seg_perception.parameters import ParameterSpec, declare_parameters
from seg_perception.throttled_log import ThrottledErrorLog
from seg_perception.topics import (CAMERA_INPUT, COLOR_OUTPUT, OUTPUT_QOS, RELIABILITY_CHOICES, SEMANTIC_OUTPUT,
                                   input_qos)

NODE_NAME = 'semantic_segmentation'
ERROR_THROTTLE_SEC = 5.0

SEMANTIC_PARAMETERS = (
    ParameterSpec('architecture', 'deeplabv3plus_mobilenet_v3_large', 'DeepLabv3+ encoder variant.',
                  choices=SEMANTIC_ARCHITECTURES),
    ParameterSpec('output_stride', 16, 'Encoder output stride (8 is finer and slower; MobileNet: 16 only).',
                  choices=(8, 16)),
    ParameterSpec('label_set', 'cityscapes', 'Classes the network outputs.', choices=tuple(LABEL_SETS)),
    ParameterSpec('checkpoint', '', 'Weights file (.pth/.pt read with weights_only, or .safetensors). '
                                    'Empty: untrained weights, reported loudly.'),
    ParameterSpec('backend', 'auto', 'Inference backend; auto picks the fastest available and logs why.',
                  choices=BACKENDS),
    ParameterSpec('model_metadata', '', 'Bring your own model: metadata .yaml naming an ONNX file, its input '
                                        'size, normalisation and label set. Replaces architecture/checkpoint.'),
    ParameterSpec('engine_dir', '', 'Engine cache for exported ONNX models and TensorRT engines (pre-build them '
                                    'with `seg-models build`); empty: $SEG_MODELS_CACHE_DIR or ~/.cache/seg_models.'),
    ParameterSpec('calibration_images', '', 'Folder of camera images for TensorRT INT8 calibration.'),
    ParameterSpec('device', 'cpu', 'Device for the PyTorch backend: cpu, cuda or cuda:N.'),
    ParameterSpec('precision', 'fp32', 'Arithmetic precision of the backend (int8: TensorRT only).',
                  choices=PRECISIONS),
    ParameterSpec('input_height', 0, 'Network input height in pixels; 0 = each camera image as it is.',
                  value_range=(0, 8192)),
    ParameterSpec('input_width', 0, 'Network input width in pixels; 0 = each camera image as it is.',
                  value_range=(0, 8192)),
    ParameterSpec('input_reliability', 'best_effort',
                  'QoS reliability of the camera subscription: best_effort for live cameras, reliable '
                  'for bag replay. Either way only the newest frame is kept.', choices=RELIABILITY_CHOICES),
    ParameterSpec('max_image_pixels', DEFAULT_MAX_PIXELS, 'Images with more pixels are rejected with an error.',
                  value_range=(1, 2**31 - 1)),
)


def semantic_config_from_parameters(values: dict[str, Any]) -> SemanticModelConfig:
    """Model configuration from the node's declared parameter values."""
    input_size = None
    if values['input_height'] and values['input_width']:
        input_size = (values['input_height'], values['input_width'])
    elif values['input_height'] or values['input_width']:
        raise ValueError('set both input_height and input_width, or neither (0 = camera resolution)')
    return SemanticModelConfig(
        architecture=values['architecture'], output_stride=values['output_stride'], label_set=values['label_set'],
        checkpoint=values['checkpoint'], backend=values['backend'], device=values['device'],
        precision=values['precision'], input_size=input_size, engine_dir=values['engine_dir'],
        calibration_images=values['calibration_images'], model_metadata=values['model_metadata'])


class SemanticSegmentationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._settings = declare_parameters(self, SEMANTIC_PARAMETERS)
        self._input_errors = ThrottledErrorLog(self.get_logger().error, ERROR_THROTTLE_SEC)
        self._segmenter = create_semantic_segmenter(semantic_config_from_parameters(self._settings))
        if not self._segmenter.is_trained:
            self.get_logger().warning('*' * 20 + ' ' + UNTRAINED_WARNING + ' ' + '*' * 20)
        self.get_logger().info(f'model {self._settings["architecture"]}, label set '
                               f'{self._segmenter.label_set.name}, backend {self._segmenter.backend.describe()}')

        self._label_info_publisher = self.create_publisher(
            LabelSetMsg, SEMANTIC_OUTPUT + LABEL_INFO_SUFFIX, LABEL_INFO_QOS)
        label_info = label_set_to_msg(self._segmenter.label_set)
        label_info.header.stamp = self.get_clock().now().to_msg()
        self._label_info_publisher.publish(label_info)

        self._class_id_publisher = self.create_publisher(Image, SEMANTIC_OUTPUT, OUTPUT_QOS)
        self._color_publisher = self.create_publisher(Image, COLOR_OUTPUT, OUTPUT_QOS)
        self._subscription = self.create_subscription(
            Image, CAMERA_INPUT, self._on_image, input_qos(self._settings['input_reliability']))

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_msg_to_rgb(msg, self._settings['max_image_pixels'])
        except ImageConversionError as error:
            self._input_errors.error(error.kind, f'dropped image (frame_id {msg.header.frame_id!r}): {error}')
            return
        result = self._segmenter.segment([rgb])[0]
        self._class_id_publisher.publish(class_ids_to_image_msg(result.class_ids, msg.header))
        if self._color_publisher.get_subscription_count() > 0:
            color = colorize(result.class_ids, self._segmenter.label_set)
            self._color_publisher.publish(array_to_image_msg(color, 'rgb8', msg.header))


def main() -> None:
    main_for(SemanticSegmentationNode)


if __name__ == '__main__':
    main()
