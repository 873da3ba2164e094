"""A perfect predictor: a node that answers each camera frame with that frame's ground truth.

It reads the ground truth of a bag (parameter ``bag``), subscribes to the camera like the real
nodes and publishes, for each frame's stamp, the ground truth as the nodes' outputs (class ids on
segmentation/semantic, instances on segmentation/instances, with their label sets). Replayed and
evaluated like the real nodes, it must score 100% mIoU and AP 1.0 (and PQ 100; HOTA 100 where the
bag's instance ids persist across frames, which it then publishes as track ids): the check that
stamps, label ids and masks line up through the whole path.

    python -m seg_perception.evaluation.ground_truth_echo --ros-args -p bag:=<bag> -r image:=/camera/image_raw

With ``cameras`` (as the segmentation nodes take it) it answers each camera of a multi-camera bag
in that camera's namespace, from that camera's ground truth.
"""
from __future__ import annotations

from rclpy.node import Node
from seg_perception_msgs.msg import InstanceMaskArray
from sensor_msgs.msg import Image

from seg_models.data.labels import cityscapes_things
from seg_perception.evaluation.bag_io import bag_topics, cameras_in_bag, read_messages
from seg_models.data.datasets import GroundTruthInfo
from seg_perception.evaluation.ground_truth import class_ids_of_ground_truth, ground_truth_label_set, instances_of
from seg_perception.messages.images import class_ids_to_image_msg, output_msg_to_array
from seg_perception.messages.instances import instances_to_msg
from seg_perception.messages.label_info import announce_label_set
from seg_perception.messages.topics import DEFAULT_CAMERAS, GROUND_TRUTH_INFO, OUTPUT_QOS, CameraBagTopics, stamp_key
from seg_perception.runtime.node_main import main_for
from seg_perception.runtime.parameters import ParameterSpec, declare_parameters

GROUND_TRUTH_ECHO_PARAMETERS = (
    ParameterSpec('bag', '', 'The bag whose ground truth answers each camera frame (seg_bag make wrote it).'),
    ParameterSpec('cameras', DEFAULT_CAMERAS, 'Camera topics to answer; default: the bag\'s one camera.'),
)


class GroundTruthEcho(Node):
    """Answers each camera frame with the bag's ground truth for its camera and stamp."""

    def __init__(self) -> None:
        super().__init__('ground_truth_echo')
        values = declare_parameters(self, GROUND_TRUTH_ECHO_PARAMETERS)
        bag, cameras = values['bag'], list(values['cameras'])
        info = next((GroundTruthInfo.from_json(msg.data) for _, _, msg in read_messages(bag, [GROUND_TRUTH_INFO])),
                    None)
        if info is None:
            raise ValueError(f'bag {bag} has no {GROUND_TRUTH_INFO}')
        self._info = info
        self.semantic_label_set = ground_truth_label_set(info.label_set)
        self.instance_label_set = cityscapes_things()
        self._keep = []  # publishers and subscriptions live as long as the node
        default = cameras == list(DEFAULT_CAMERAS)
        named = [] if default else cameras
        for entry, topics in zip(cameras, cameras_in_bag(bag_topics(bag), named)):
            self._answer_camera(bag, entry if default else topics.camera, topics)

    def _answer_camera(self, bag: str, camera: str, topics: CameraBagTopics) -> None:
        """Subscribe to ``camera`` and answer it from ``topics``' ground truth on its prediction topics."""
        semantic, instances = {}, {}
        for topic, _, msg in read_messages(bag, list(topics.ground_truths)):
            store = semantic if topic == topics.ground_truth_semantic else instances
            store[stamp_key(msg.header)] = output_msg_to_array(msg)
        outputs = {}
        answers = [(topics.semantic_prediction, Image, self.semantic_label_set)] if self._info.has_semantic else []
        if self._info.has_instances:  # only outputs it can answer, or replay would wait for them
            answers.append((topics.instance_prediction, InstanceMaskArray, self.instance_label_set))
        for topic, msg_type, label_set in answers:
            self._keep.append(announce_label_set(self, topic, label_set))
            outputs[topic] = self.create_publisher(msg_type, topic, OUTPUT_QOS)

        def on_image(msg: Image) -> None:
            key = stamp_key(msg.header)
            if key in semantic:
                ids = class_ids_of_ground_truth(semantic[key], self._info.label_set)
                outputs[topics.semantic_prediction].publish(class_ids_to_image_msg(ids, msg.header))
            if key in instances:
                result = instances_of(instances[key], self.instance_label_set, self._info.instance_ids_persist)
                outputs[topics.instance_prediction].publish(
                    instances_to_msg(result, msg.header, self.instance_label_set.name))
        self._keep.append(self.create_subscription(Image, camera, on_image, OUTPUT_QOS))


def main() -> None:
    main_for(GroundTruthEcho, __doc__, lambda: GROUND_TRUTH_ECHO_PARAMETERS)


if __name__ == '__main__':
    main()
