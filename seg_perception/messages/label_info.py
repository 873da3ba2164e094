"""The label-set message a segmentation node publishes once, transient-local, beside its outputs."""
from __future__ import annotations

from rclpy.node import Node
from rclpy.publisher import Publisher
from seg_perception_msgs.msg import LabelSet as LabelSetMsg
from seg_perception_msgs.msg import SegmentationClass

from seg_models.data.labels import LabelClass, LabelSet
from seg_perception.messages.topics import LABEL_INFO_QOS, LABEL_INFO_SUFFIX


def label_set_to_msg(label_set: LabelSet, threshold: float = 0.0) -> LabelSetMsg:
    msg = LabelSetMsg(name=label_set.name, ignore_id=label_set.ignore_id, threshold=float(threshold))
    msg.classes = [
        SegmentationClass(class_id=label.id, name=label.name, red=label.color[0], green=label.color[1],
                          blue=label.color[2], is_thing=label.is_thing)
        for label in label_set.classes
    ]
    return msg


def announce_label_set(node: Node, output_topic: str, label_set: LabelSet, threshold: float = 0.0) -> Publisher:
    """Publish ``label_set`` once on ``<output_topic>/label_info``, stamped now; the publisher is
    returned so the node keeps it (transient local: late subscribers get the message from it)."""
    publisher = node.create_publisher(LabelSetMsg, output_topic + LABEL_INFO_SUFFIX, LABEL_INFO_QOS)
    publish_label_set(node, publisher, label_set, threshold)
    return publisher


def publish_label_set(node: Node, publisher: Publisher, label_set: LabelSet, threshold: float = 0.0) -> None:
    """``label_set`` on a label_info ``publisher``, stamped now (again, where it changed)."""
    msg = label_set_to_msg(label_set, threshold)
    msg.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(msg)


def label_set_from_msg(msg: LabelSetMsg) -> LabelSet:
    """The label set a node announced, for consumers that colour or name its outputs."""
    classes = tuple(LabelClass(id=c.class_id, name=c.name, color=(c.red, c.green, c.blue), is_thing=c.is_thing)
                    for c in msg.classes)
    return LabelSet(name=msg.name, classes=classes, ignore_id=msg.ignore_id)
