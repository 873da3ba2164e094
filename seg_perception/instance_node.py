"""Instance segmentation node: Mask R-CNN on camera images, InstanceMaskArray on segmentation/instances.

Subscribes:  image (sensor_msgs/Image) or image/compressed, exactly as the semantic node does
Publishes:   segmentation/instances (seg_perception_msgs/InstanceMaskArray, the input's header;
             an empty array for a frame without instances, never silence)
             segmentation/instances/label_info (seg_perception_msgs/LabelSet, transient local, once)
             ~/overlay (rgb8: masks, boxes, class and score on the camera image; only while
             subscribed), ~/processing_time, /diagnostics
Input, worker, lazy mode, diagnostics and lifecycle: ``camera_pipeline``, shared with every node.
"""
from __future__ import annotations

from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import Image
from seg_perception_msgs.msg import InstanceMaskArray

from seg_models.instance import UNTRAINED_WARNING, InstanceModelConfig, InstanceSegmenter, create_instance_segmenter
from seg_models.instance_postprocess import InstanceFilter, InstanceResult
from seg_models.labels import LABEL_SETS, get_label_set
from seg_models.models.maskrcnn import MASK_RCNN_ARCHITECTURES
from seg_models.visualize import draw_instances
from seg_perception.camera_pipeline import CAMERA_PIPELINE_PARAMETERS, CameraFrame, Outputs
from seg_perception.image_conversion import array_to_image_msg
from seg_perception.instance_messages import instances_to_msg
from seg_perception.node_main import main_for
from seg_perception.parameters import BACKEND_PARAMETERS, ParameterSpec, ParameterValueError, network_input_size
from seg_perception.segmentation_node import ManagedSegmentationNode, NodeDefinition, SegmentationNode
from seg_perception.segmenter_processor import SegmenterProcessor
from seg_perception.topics import INSTANCE_OUTPUT, OVERLAY_OUTPUT

NODE_NAME = 'instance_segmentation'
NATIVE_INPUT_SIZE = InstanceModelConfig().input_size  # Cityscapes frames, 1024x2048

INSTANCE_MODEL_PARAMETERS = (
    ParameterSpec('architecture', 'maskrcnn_resnet50_fpn', 'Mask R-CNN variant (torchvision).',
                  choices=MASK_RCNN_ARCHITECTURES),
    ParameterSpec('label_set', 'cityscapes_things', 'Classes the network was trained on (coco_things for '
                                                    "torchvision's COCO weights).", choices=tuple(LABEL_SETS)),
    ParameterSpec('output_label_set', '', 'Classes to publish (e.g. cityscapes_things from a COCO model); '
                                          "empty: the network's own.", choices=('',) + tuple(LABEL_SETS)),
    ParameterSpec('checkpoint', '', 'Mask R-CNN weights in torchvision layout (.pth/.pt read with weights_only, '
                                    'or .safetensors). Empty: untrained weights, reported loudly.'),
    ParameterSpec('score_threshold', 0.5, 'Detections scoring below this are not published.',
                  value_range=(0.0, 1.0)),
    ParameterSpec('mask_threshold', 0.5, 'Mask probability at which a pixel belongs to the instance.',
                  value_range=(0.0, 1.0)),
    ParameterSpec('max_instances', 100, 'At most this many instances per image, highest scores first.',
                  value_range=(1, 1000)),
    ParameterSpec('class_filter', (), 'Class names to publish, e.g. [car, person]; empty: every class.'),
    ParameterSpec('overlay_alpha', 0.5, 'Weight of the class colours on the masks in ~/overlay.',
                  value_range=(0.0, 1.0)),
)

INSTANCE_PARAMETERS = INSTANCE_MODEL_PARAMETERS + BACKEND_PARAMETERS + CAMERA_PIPELINE_PARAMETERS


def class_filter_ids(names: tuple[str, ...], label_set_name: str) -> tuple[int, ...]:
    """Class ids of ``names`` in the published label set; unknown names are refused, listing the known."""
    label_set = get_label_set(label_set_name)
    unknown = [name for name in names if name not in label_set.names]
    if unknown:
        raise ParameterValueError(f'class_filter names {unknown} are not in label set {label_set.name}; '
                                  f'known: {", ".join(label_set.names)}')
    return tuple(label_set.names.index(name) for name in names)


def instance_config_from_parameters(values: dict[str, Any]) -> InstanceModelConfig:
    """Model configuration from the node's declared parameter values."""
    output_label_set = values['output_label_set'] or values['label_set']
    selection = InstanceFilter(score_threshold=values['score_threshold'], mask_threshold=values['mask_threshold'],
                               max_instances=values['max_instances'],
                               class_ids=class_filter_ids(values['class_filter'], output_label_set))
    return InstanceModelConfig(
        architecture=values['architecture'], label_set=values['label_set'],
        output_label_set=values['output_label_set'], checkpoint=values['checkpoint'],
        input_size=network_input_size(values) or NATIVE_INPUT_SIZE,
        max_detections=max(100, values['max_instances']), selection=selection, backend=values['backend'],
        device=values['device'], precision=values['precision'], engine_dir=values['engine_dir'],
        calibration_images=values['calibration_images'])


class InstanceProcessor(SegmenterProcessor):
    """Mask R-CNN and its output messages, plugged into the camera pipeline."""

    untrained_warning = UNTRAINED_WARNING

    def __init__(self, node: Node, settings: dict[str, Any], outputs: Outputs) -> None:
        self._config = instance_config_from_parameters(settings)
        super().__init__(node, settings)
        self.announce_label_set(INSTANCE_OUTPUT, settings['score_threshold'])
        self._instances_publisher = outputs.create(InstanceMaskArray, INSTANCE_OUTPUT)
        self._overlay_publisher = outputs.create(Image, OVERLAY_OUTPUT)

    def create_segmenter(self) -> InstanceSegmenter:
        return create_instance_segmenter(self._config)

    def model_name(self) -> str:
        return self._config.architecture

    def publish_result(self, frame: CameraFrame, result: InstanceResult) -> None:
        self._instances_publisher.publish(instances_to_msg(result, frame.header, self.label_set.name))
        if self._overlay_publisher.get_subscription_count():
            drawn = draw_instances(frame.rgb, result.instances, self.label_set, self._settings['overlay_alpha'])
            self._overlay_publisher.publish(array_to_image_msg(drawn, 'rgb8', frame.header))


INSTANCE_NODE = NodeDefinition(NODE_NAME, INSTANCE_PARAMETERS, InstanceProcessor)


class InstanceSegmentationNode(SegmentationNode):
    definition = INSTANCE_NODE


class ManagedInstanceSegmentationNode(ManagedSegmentationNode):
    definition = INSTANCE_NODE


def main() -> None:
    main_for(InstanceSegmentationNode)


if __name__ == '__main__':
    main()
