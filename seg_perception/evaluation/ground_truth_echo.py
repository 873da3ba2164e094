"""A perfect predictor: a node that answers each camera frame with that frame's ground truth.

It reads the ground truth of a bag (parameter ``bag``), subscribes to the camera like the real
nodes and publishes, for each frame's stamp, the ground truth as the nodes' outputs (class ids on
segmentation/semantic, instances on segmentation/instances, with their label sets). Replayed and
evaluated like the real nodes, it must score 100% mIoU and AP 1.0: the check that stamps, label
ids and masks line up through the whole path.

    python -m seg_perception.evaluation.ground_truth_echo --ros-args -p bag:=<bag> -r image:=/camera/image_raw
"""
from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image
from seg_perception_msgs.msg import InstanceMaskArray

from seg_models.labels import cityscapes_things
from seg_perception.evaluation.bag_io import read_messages
from seg_perception.evaluation.datasets import GroundTruthInfo
from seg_perception.evaluation.ground_truth import class_ids_of_ground_truth, ground_truth_label_set, instances_of
from seg_perception.messages.images import class_ids_to_image_msg, output_msg_to_array
from seg_perception.messages.instances import instances_to_msg
from seg_perception.messages.label_info import announce_label_set
from seg_perception.messages.topics import (CAMERA_INPUT, GROUND_TRUTH_INFO, GROUND_TRUTH_INSTANCES,
                                            GROUND_TRUTH_SEMANTIC, INSTANCE_OUTPUT, OUTPUT_QOS, SEMANTIC_OUTPUT,
                                            stamp_key)
from seg_perception.runtime.node_main import main_for


class GroundTruthEcho(Node):
    """Answers each camera frame with the bag's ground truth for its stamp."""

    def __init__(self) -> None:
        super().__init__('ground_truth_echo')
        bag = self.declare_parameter('bag', '').value
        self._semantic, self._instances, info = {}, {}, None
        for topic, _, msg in read_messages(bag, [GROUND_TRUTH_INFO, GROUND_TRUTH_SEMANTIC, GROUND_TRUTH_INSTANCES]):
            if topic == GROUND_TRUTH_INFO:
                info = GroundTruthInfo.from_json(msg.data)
                continue
            store = self._semantic if topic == GROUND_TRUTH_SEMANTIC else self._instances
            store[stamp_key(msg.header)] = output_msg_to_array(msg)
        if info is None:
            raise ValueError(f'bag {bag} has no {GROUND_TRUTH_INFO}')
        self._info = info
        self.semantic_label_set = ground_truth_label_set(info.label_set)
        self.instance_label_set = cityscapes_things()
        self._outputs = {}
        outputs = [(SEMANTIC_OUTPUT, Image, self.semantic_label_set)] if info.has_semantic else []
        if info.has_instances:  # only outputs it can answer, or replay would wait for them
            outputs.append((INSTANCE_OUTPUT, InstanceMaskArray, self.instance_label_set))
        for topic, msg_type, label_set in outputs:
            announcement = announce_label_set(self, topic, label_set)
            self._outputs[topic] = (self.create_publisher(msg_type, topic, OUTPUT_QOS), announcement)
        self.create_subscription(Image, CAMERA_INPUT, self._on_image, OUTPUT_QOS)

    def _on_image(self, msg: Image) -> None:
        key = stamp_key(msg.header)
        if key in self._semantic:
            ids = class_ids_of_ground_truth(self._semantic[key], self._info.label_set)
            self._outputs[SEMANTIC_OUTPUT][0].publish(class_ids_to_image_msg(ids, msg.header))
        if key in self._instances:
            result = instances_of(self._instances[key], self.instance_label_set)
            self._outputs[INSTANCE_OUTPUT][0].publish(
                instances_to_msg(result, msg.header, self.instance_label_set.name))


def main() -> None:
    main_for(GroundTruthEcho)


if __name__ == '__main__':
    main()
