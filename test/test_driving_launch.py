"""``ros2 launch seg_perception driving.launch.py`` under launch_testing, on a real ROS 2 install.

Run there with ``launch_test test/test_driving_launch.py`` or ``colcon test``. Where launch_testing
is not installable (the PyPI-wheel setup of scripts/bootstrap.sh) the module is skipped; the same
behaviour is covered by test_install_and_launch.py, test_semantic_node.py and test_instance_node.py
with rclpy only.
"""
import os
import tempfile
import time
import unittest

import pytest

pytest.importorskip(
    'launch_testing', reason='launch_testing is not installed (no ROS 2 install; PyPI has no launch wheels)')

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import yaml  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from seg_perception_msgs.msg import InstanceMaskArray  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from seg_perception.messages.images import array_to_image_msg  # noqa: E402
from seg_perception.messages.topics import OUTPUT_QOS  # noqa: E402

CAMERA_TOPIC = '/launch_test/camera/image_raw'


def _small_params_file() -> str:
    """The installed config with a small network input, so the test is quick on a CPU."""
    share = get_package_share_directory('seg_perception')
    with open(os.path.join(share, 'config', 'driving.yaml')) as handle:
        config = yaml.safe_load(handle)
    for section in config.values():
        section['ros__parameters'].update(input_height=64, input_width=128, input_reliability='reliable')
    handle = tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False)
    yaml.safe_dump(config, handle)
    handle.close()
    return handle.name


@pytest.mark.launch_test
def generate_test_description():
    driving = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            os.path.join(get_package_share_directory('seg_perception'), 'launch', 'driving.launch.py')),
        launch_arguments={'camera_topic': CAMERA_TOPIC, 'params_file': _small_params_file()}.items())
    return launch.LaunchDescription([driving, launch_testing.actions.ReadyToTest()])


class TestPipelineOutputs(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node('driving_launch_probe')

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_camera_image_yields_labels_and_instances_with_its_header_and_size(self, proc_output):
        labels, instances = [], []
        self.node.create_subscription(Image, '/segmentation/semantic', labels.append, OUTPUT_QOS)
        self.node.create_subscription(InstanceMaskArray, '/segmentation/instances', instances.append, OUTPUT_QOS)
        publisher = self.node.create_publisher(Image, CAMERA_TOPIC, OUTPUT_QOS)
        header = Header(frame_id='launch_test_camera')
        header.stamp.sec = 4242
        image = array_to_image_msg(np.full((120, 200, 3), 90, np.uint8), 'rgb8', header)
        deadline = time.monotonic() + 180.0
        while not (labels and instances) and time.monotonic() < deadline:
            publisher.publish(image)
            rclpy.spin_once(self.node, timeout_sec=1.0)
        self.assertTrue(labels, 'no label image from the launched semantic node')
        self.assertTrue(instances, 'no InstanceMaskArray from the launched instance node')
        self.assertEqual((labels[0].height, labels[0].width, labels[0].encoding), (120, 200, 'mono8'))
        self.assertEqual((labels[0].header.stamp.sec, labels[0].header.frame_id), (4242, 'launch_test_camera'))
        self.assertEqual((instances[0].image_height, instances[0].image_width), (120, 200))
        self.assertEqual((instances[0].header.stamp.sec, instances[0].header.frame_id), (4242, 'launch_test_camera'))
        proc_output.assertWaitFor('UNTRAINED', timeout=10, stream='stderr')


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_nodes_exit_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2])
