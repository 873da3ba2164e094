"""A separate process that publishes the sample messages, for the cross-process DDS test.

Publishes the LabelSet once (transient local), prints READY, then the InstanceMaskArray every
100 ms until interrupted.
"""
import sys
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from seg_perception_msgs.msg import InstanceMaskArray, LabelSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from message_samples import sample_instance_array, sample_label_set  # noqa: E402

from seg_perception.messages.topics import LABEL_INFO_QOS  # noqa: E402
from seg_perception.messages.topics import OUTPUT_QOS  # noqa: E402


def main() -> None:
    rclpy.init()
    node = rclpy.create_node('dds_peer')
    node.create_publisher(LabelSet, '/segmentation/instances/label_info', LABEL_INFO_QOS).publish(sample_label_set())
    instances = node.create_publisher(InstanceMaskArray, '/segmentation/instances', OUTPUT_QOS)
    sample = sample_instance_array()
    node.create_timer(0.1, lambda: instances.publish(sample))
    print('READY', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
