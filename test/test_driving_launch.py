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
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from seg_perception_msgs.msg import InstanceMaskArray  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from seg_perception.messages.images import array_to_image_msg  # noqa: E402
from seg_perception.bringup.driving_pipeline import DRIVING_PIPELINE, camera_list  # noqa: E402
from seg_perception.messages.topics import (CAMERA_INPUT, INSTANCE_NODE, INSTANCE_OUTPUT, OUTPUT_QOS,  # noqa: E402
                                            SEMANTIC_NODE, SEMANTIC_OUTPUT, camera_output_topic)

CAMERA_TOPIC = '/launch_test/camera/image_raw'
TWO_CAMERAS = '[/launch_test/front/image_raw, /launch_test/rear/image_raw]'


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
@launch_testing.parametrize('cameras', ['', TWO_CAMERAS])
def generate_test_description(cameras):
    """The default camera (remapped to camera_topic), and two cameras given as a launch argument."""
    driving = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            os.path.join(get_package_share_directory('seg_perception'), 'launch', 'driving.launch.py')),
        launch_arguments={'camera_topic': CAMERA_TOPIC, 'params_file': _small_params_file(),
                          'cameras': cameras}.items())
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

    def test_camera_list_reaches_every_node(self, cameras):
        expected = camera_list(cameras) or [CAMERA_INPUT]
        for pipeline_node in DRIVING_PIPELINE:
            client = self.node.create_client(GetParameters, f'/{pipeline_node.name}/get_parameters')
            self.assertTrue(client.wait_for_service(timeout_sec=60.0), f'{pipeline_node.name} has no parameters')
            future = client.call_async(GetParameters.Request(names=['cameras']))
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=30.0)
            self.assertEqual(parameter_value_to_python(future.result().values[0]), expected)

    def test_camera_image_yields_labels_and_instances_with_its_header_and_size(self, proc_output, cameras):
        entries = camera_list(cameras) or [CAMERA_INPUT]
        for entry in entries:
            labels, instances = [], []
            self.node.create_subscription(Image, camera_output_topic(entry, SEMANTIC_NODE, SEMANTIC_OUTPUT),
                                          labels.append, OUTPUT_QOS)
            self.node.create_subscription(InstanceMaskArray, camera_output_topic(entry, INSTANCE_NODE,
                                                                                 INSTANCE_OUTPUT),
                                          instances.append, OUTPUT_QOS)
            camera_topic = CAMERA_TOPIC if entry == CAMERA_INPUT else entry
            publisher = self.node.create_publisher(Image, camera_topic, OUTPUT_QOS)
            header = Header(frame_id=f'{camera_topic}_frame')
            header.stamp.sec = 4242
            image = array_to_image_msg(np.full((120, 200, 3), 90, np.uint8), 'rgb8', header)
            deadline = time.monotonic() + 180.0
            while not (labels and instances) and time.monotonic() < deadline:
                publisher.publish(image)
                rclpy.spin_once(self.node, timeout_sec=1.0)
            self.assertTrue(labels, f'no label image for {camera_topic} from the launched semantic node')
            self.assertTrue(instances, f'no InstanceMaskArray for {camera_topic} from the launched instance node')
            self.assertEqual((labels[0].height, labels[0].width, labels[0].encoding), (120, 200, 'mono8'))
            self.assertEqual((labels[0].header.stamp.sec, labels[0].header.frame_id), (4242, header.frame_id))
            self.assertEqual((instances[0].image_height, instances[0].image_width), (120, 200))
            self.assertEqual((instances[0].header.stamp.sec, instances[0].header.frame_id), (4242, header.frame_id))
        proc_output.assertWaitFor('UNTRAINED', timeout=10, stream='stderr')


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_nodes_exit_cleanly(self, proc_info, proc_output):
        """launch's SIGINT (and the terminal's, on Ctrl-C) ends every node with exit code 0 and no
        traceback, ERROR line or rclpy complaint about a dead context."""
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0])
        for output in proc_output:
            for unwanted in (b'Traceback', b'[ERROR]', b'Failed to publish log message'):
                self.assertNotIn(unwanted, output.text, output.process_name)
