"""Example consumer of /segmentation/instances: full-frame masks back from each message.

    ros2 run seg_perception instance_listener   (or: python -m seg_perception.nodes.instance_listener)

Logs one line per frame: stamp, and each instance's class, score and mask area. A tracker or
planner would use ``full_frame_masks(msg)`` (or the box-cropped masks directly) the same way.
"""
from __future__ import annotations

from rclpy.node import Node
from seg_perception_msgs.msg import InstanceMaskArray

from seg_perception.messages.instances import full_frame_masks
from seg_perception.messages.topics import INSTANCE_OUTPUT, OUTPUT_QOS
from seg_perception.runtime.node_main import main_for


class InstanceListener(Node):
    """Logs each InstanceMaskArray it receives, one line per frame."""

    def __init__(self) -> None:
        super().__init__('instance_listener')
        self.create_subscription(InstanceMaskArray, INSTANCE_OUTPUT, self._on_instances, OUTPUT_QOS)

    def _on_instances(self, msg: InstanceMaskArray) -> None:
        masks = full_frame_masks(msg)  # (N, image_height, image_width) bool
        found = ', '.join(f'{instance.class_name} {instance.score:.2f} ({int(mask.sum())} px)'
                          for instance, mask in zip(msg.instances, masks)) or 'nothing'
        self.get_logger().info(f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} '
                               f'{msg.header.frame_id}: {found}')


def main() -> None:
    main_for(InstanceListener, __doc__)


if __name__ == '__main__':
    main()
