"""Instance segmentation node: Mask R-CNN on camera images, InstanceMaskArray on segmentation/instances.

    ros2 run seg_perception instance_node [--ros-args -p autostart:=false]

Subscribes:  image (sensor_msgs/Image) or image/compressed, or the cameras parameter's topics,
             exactly as the semantic node does
Publishes:   segmentation/instances (seg_perception_msgs/InstanceMaskArray, the input's header;
             an empty array for a frame without instances, never silence)
             segmentation/instances/label_info (seg_perception_msgs/LabelSet, transient local, once)
             (track_id: the object's id across the camera's frames, seg_models.tracking)
             ~/overlay (rgb8: masks, boxes, class and score on the camera image; only while
             subscribed), ~/processing_time, /diagnostics
Camera input, worker, lazy mode and diagnostics: ``runtime.camera_input``; lifecycle and autostart:
``nodes.segmentation_node``; both shared with the semantic node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rclpy.node import Node
from rclpy.publisher import Publisher
from seg_perception_msgs.msg import InstanceMaskArray
from sensor_msgs.msg import Image

from seg_models.configs import InstanceFilter, InstanceModelConfig, TrackerSettings, build_config, field_default
from seg_models.data.labels import LABEL_SETS, get_label_set
from seg_models.data.visualize import draw_instances
from seg_models.models.maskrcnn import MASK_RCNN_ARCHITECTURES
from seg_models.segmenters.instance import InstanceSegmenter, create_instance_segmenter
from seg_models.segmenters.instance_postprocess import InstanceResult
from seg_models.tracking import MaskTracker
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.instances import instances_to_msg
from seg_perception.messages.topics import INSTANCE_NODE, INSTANCE_OUTPUT, OVERLAY_OUTPUT, stamp_key, stamp_seconds
from seg_perception.nodes.segmentation_node import SegmentationNode, SegmenterProcessor
from seg_perception.runtime.camera_channel import OutputPublishers
from seg_perception.runtime.camera_input import CameraFrame
from seg_perception.runtime.parameters import (ParameterSpec, ParameterValueError, input_size_from_parameters,
                                               max_batch_parameter)

NATIVE_INPUT_SIZE = (1024, 2048)  # input_height/width 0: Cityscapes frames as Mask R-CNN was trained on


def tracker_parameter_name(field: str) -> str:
    """The node's parameter for TrackerSettings' ``field``: ``tracking`` for ``enabled``, else ``track_<field>``."""
    return 'tracking' if field == 'enabled' else f'track_{field}'


def tracker_parameter(field: str, description: str, **options: Any) -> ParameterSpec:
    return ParameterSpec(tracker_parameter_name(field), field_default(TrackerSettings, field), description, **options)


TRACKER_PARAMETERS = (
    tracker_parameter('enabled', 'Give instances a track_id that persists across the camera\'s frames.'),
    tracker_parameter('similarity', 'What associates a detection with a track: mask (IoU of the box-cropped masks, '
                                    'for boxes that overlap) or box (IoU of the boxes).', choices=('mask', 'box')),
    tracker_parameter('high_score', 'Detections at least this sure are matched first and may start tracks '
                                    '(ByteTrack).', value_range=(0.0, 1.0)),
    tracker_parameter('low_score', 'Detections between this and track_high_score only keep existing tracks alive '
                                   '(second stage); those below score_threshold are published only while they '
                                   'continue a track.', value_range=(0.0, 1.0)),
    tracker_parameter('match_iou', 'Least IoU of a first-stage match.', value_range=(0.0, 1.0)),
    tracker_parameter('low_match_iou', 'Least IoU of a second-stage match.', value_range=(0.0, 1.0)),
    tracker_parameter('max_age', 'Frames a track survives without a match.', value_range=(0, 10000)),
    tracker_parameter('min_hits', 'Matched frames before a track\'s id is published (track_id 0 until then).',
                      value_range=(1, 1000)),
    tracker_parameter('max_gap', 'Seconds between two frames of a camera beyond which its tracks are reset, when '
                                 'also three times its usual interval (a stamp going back, a bag looping, resets '
                                 'them too).', value_range=(0.0, 3600.0)),
    tracker_parameter('motion', 'Predict each track\'s box at constant velocity before matching.'),
)

INSTANCE_PARAMETERS = (
    ParameterSpec.of_field(InstanceModelConfig, 'architecture', 'Mask R-CNN variant (torchvision).',
                           choices=MASK_RCNN_ARCHITECTURES),
    ParameterSpec.of_field(InstanceModelConfig, 'label_set', 'Classes the network was trained on (coco_things for '
                                                             "torchvision's COCO weights).",
                           choices=tuple(LABEL_SETS)),
    ParameterSpec.of_field(InstanceModelConfig, 'output_label_set', 'Classes to publish (e.g. cityscapes_things '
                                                                    "from a COCO model); empty: the network's own.",
                           choices=('',) + tuple(LABEL_SETS)),
    ParameterSpec.of_field(InstanceModelConfig, 'checkpoint', 'Mask R-CNN weights in torchvision layout (.pth/.pt '
                                                              'read with weights_only, or .safetensors), or a named '
                                                              'checkpoint (seg-models weights list, e.g. '
                                                              'maskrcnn_resnet50_fpn_coco), fetched once into the '
                                                              'cache. Empty: untrained weights, reported loudly.'),
    ParameterSpec.of_field(InstanceModelConfig, 'model_metadata', "Another exporter's model: metadata .yaml naming an "
                                                                  'ONNX file and its format (ultralytics_seg, '
                                                                  'ultralytics_seg_end2end, mmdeploy_instance) and '
                                                                  'label set. Replaces architecture/checkpoint.'),
    ParameterSpec.of_field(InstanceFilter, 'score_threshold', 'Detections scoring below this are not published.',
                           value_range=(0.0, 1.0)),
    ParameterSpec.of_field(InstanceFilter, 'mask_threshold', 'Mask probability at which a pixel belongs to the '
                                                             'instance.', value_range=(0.0, 1.0)),
    ParameterSpec.of_field(InstanceFilter, 'max_instances', 'At most this many instances per image, highest scores '
                                                            'first.', value_range=(1, 1000)),
    ParameterSpec('class_filter', (), 'Class names to publish, e.g. [car, person]; empty: every class.'),
    ParameterSpec('overlay_alpha', 0.5, 'Weight of the class colours on the masks in ~/overlay.',
                  value_range=(0.0, 1.0)),
    max_batch_parameter(InstanceModelConfig, 'Images per model call: the fixed batch the graph (ONNX, TensorRT) is '
                                             'built for, padded when fewer cameras wait; set it to the number of '
                                             'cameras.'),
) + TRACKER_PARAMETERS


def tracker_settings_from_parameters(values: dict[str, Any]) -> TrackerSettings:
    settings = TrackerSettings(**{field: values[tracker_parameter_name(field)]
                                  for field in TrackerSettings.__dataclass_fields__})
    if settings.low_score > settings.high_score:
        raise ParameterValueError(f'track_low_score {settings.low_score} is above track_high_score '
                                  f'{settings.high_score}: the second stage would take nothing')
    return settings


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
    output_filter = build_config(InstanceFilter, values,
                                 class_ids=class_filter_ids(values['class_filter'], output_label_set),
                                 track_low_score=values[tracker_parameter_name('low_score')]
                                 if values[tracker_parameter_name('enabled')] else None)
    defaults = InstanceModelConfig()
    return build_config(InstanceModelConfig, values, output_filter=output_filter,
                        input_size=input_size_from_parameters(values) or NATIVE_INPUT_SIZE,
                        max_detections=max(defaults.max_detections, values['max_instances']))


@dataclass(frozen=True)
class InstancePublishers:
    """One camera's instance outputs."""

    instances: Publisher
    overlay: Publisher
    tracker: Optional[MaskTracker]  # this camera's tracks; None with tracking off


class InstanceProcessor(SegmenterProcessor):
    """Mask R-CNN and its output messages."""

    config_from_parameters = staticmethod(instance_config_from_parameters)
    answer_type = InstanceMaskArray  # what its main output carries

    def __init__(self, node: Node, values: dict[str, Any]) -> None:
        self.config = self.config_from_parameters(values)
        super().__init__(node, self.config.model_metadata or self.config.architecture,
                         self.config.output_filter.score_threshold)
        self._overlay_alpha = values['overlay_alpha']
        self._tracker_settings = tracker_settings_from_parameters(values)
        self._trackers: dict[str, MaskTracker] = {}  # camera input topic -> its tracker

    def create_segmenter(self) -> InstanceSegmenter:
        return create_instance_segmenter(self.config)

    def create_outputs(self, outputs: OutputPublishers) -> InstancePublishers:
        tracker = None
        if self._tracker_settings.enabled:  # kept across cleanup and configure: ids are never given twice
            tracker = self._trackers.setdefault(outputs.topics.input_topic, MaskTracker(self._tracker_settings))
        return InstancePublishers(instances=outputs.create(InstanceMaskArray, INSTANCE_OUTPUT),
                                  overlay=outputs.create(Image, OVERLAY_OUTPUT), tracker=tracker)

    def publish_result(self, publishers: InstancePublishers, frame: CameraFrame, result: InstanceResult) -> None:
        if publishers.tracker is not None:
            reset = publishers.tracker.track(result, stamp_seconds(stamp_key(frame.header)))
            if reset:
                self._node.get_logger().warning(f'{frame.camera}: {reset}')
        publishers.instances.publish(instances_to_msg(result, frame.header, self.label_set.name))
        if publishers.overlay.get_subscription_count():
            drawn = draw_instances(frame.rgb, result.instances, self.label_set, self._overlay_alpha)
            publishers.overlay.publish(array_to_image_msg(drawn, 'rgb8', frame.header))


class InstanceSegmentationNode(SegmentationNode):  # executables: instance_node, instance_lifecycle_node
    node_name, task_parameters, main_output = INSTANCE_NODE, INSTANCE_PARAMETERS, INSTANCE_OUTPUT
    processor_type = InstanceProcessor


if __name__ == '__main__':
    InstanceSegmentationNode.main()
