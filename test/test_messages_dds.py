"""seg_perception_msgs messages cross a process boundary over real DDS, intact."""
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from seg_perception_msgs.msg import InstanceMaskArray, LabelSet
from std_msgs.msg import String

from message_samples import sample_instance_array, sample_label_set
from ros_helpers import REPO_ROOT, ProbeNode
from seg_perception.messages.dds_profile import (LARGE_IMAGES_PROFILE, LOCALHOST_PROFILE, PROFILE_VARIABLE,
                                                 use_large_images_profile)
from seg_models.data.labels import cityscapes
from seg_perception.messages.label_info import label_set_from_msg
from seg_perception.messages.topics import LABEL_INFO_QOS, OUTPUT_QOS
from seg_perception.runtime.camera_statistics import PublicationGaps

pytestmark = pytest.mark.ros


def test_instance_array_and_late_joined_label_set_arrive_intact_from_another_process():
    peer = subprocess.Popen([sys.executable, str(Path(__file__).parent / 'dds_peer.py')],
                            stdout=subprocess.PIPE, text=True)
    probe = ProbeNode('dds_probe')
    try:
        assert peer.stdout.readline().strip() == 'READY'
        time.sleep(0.5)  # the label set was published before this node subscribes: a late joiner
        received = {}
        probe.node.create_subscription(InstanceMaskArray, '/segmentation/instances',
                                       lambda msg: received.setdefault('instances', msg), OUTPUT_QOS)
        probe.node.create_subscription(LabelSet, '/segmentation/instances/label_info',
                                       lambda msg: received.setdefault('labels', msg), LABEL_INFO_QOS)
        assert probe.spin_until(lambda: len(received) == 2, timeout=20), f'received only {sorted(received)}'
    finally:
        probe.close()
        peer.terminate()
        peer.wait(timeout=10)

    expected = sample_instance_array()
    assert received['instances'] == expected  # every field, mask bytes included
    assert received['labels'] == sample_label_set()
    # The overlapping instances both keep their own full masks.
    first, second = received['instances'].instances[:2]
    assert first.box.x_offset < second.box.x_offset < first.box.x_offset + first.box.width
    mask = np.frombuffer(second.mask.data, np.uint8).reshape(second.box.height, second.box.width)
    assert set(np.unique(mask)) == {0, 255}
    assert label_set_from_msg(received['labels']).names == cityscapes().names


def test_frames_the_reader_history_overwrote_are_counted_from_sequence_numbers():
    """What DDS' message_lost events never report: frames a keep-last reader history overwrote
    before the executor took them, seen as gaps in the publisher's sequence numbers."""
    probe = ProbeNode('gaps_probe')
    gaps, missed, received = PublicationGaps(), [], []
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)

    def on_message(msg, info):
        received.append(msg.data)
        missed.append(gaps.missed(info))

    try:
        probe.node.create_subscription(String, '/gaps_test', on_message, qos)
        publisher = probe.node.create_publisher(String, '/gaps_test', qos)
        assert probe.spin_until(lambda: publisher.get_subscription_count() == 1, 10)
        for index in range(3):
            publisher.publish(String(data=str(index)))
        assert probe.spin_until(lambda: len(received) == 3, 10)
        for index in range(3, 13):  # nobody takes them: the history keeps the last 5 of these 10
            publisher.publish(String(data=str(index)))
        assert probe.spin_until(lambda: len(received) == 8, 10)
    finally:
        probe.close()
    assert received == [str(index) for index in (0, 1, 2, 8, 9, 10, 11, 12)]
    assert gaps.reported and missed == [0, 0, 0, 5, 0, 0, 0, 0]


def test_the_profile_in_effect_is_the_users_else_the_installed_one_for_fast_dds_only():
    environ = {}
    assert use_large_images_profile(environ) == environ[PROFILE_VARIABLE]
    assert Path(environ[PROFILE_VARIABLE]).read_bytes() == (REPO_ROOT / LARGE_IMAGES_PROFILE).read_bytes()
    assert Path(use_large_images_profile({}, LOCALHOST_PROFILE)).name == 'fastdds_localhost.xml'
    assert use_large_images_profile({PROFILE_VARIABLE: '/etc/mine.xml'}) == '/etc/mine.xml'
    other_rmw = {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}
    assert use_large_images_profile(other_rmw) == '' and PROFILE_VARIABLE not in other_rmw


def test_image_source_gets_2048x1024_frames_through_best_effort(tmp_path):
    """image_source started with no profile in its environment (as ros2 run starts it) uses the
    installed large-images profile: 6 MB frames arrive best-effort, which Fast DDS's default 512 KiB
    shared-memory segments never carry (without it about 4 of 50 arrive; with it all 50)."""
    rate_hz, window_sec = 10.0, 5.0
    frames = tmp_path / 'frames'
    frames.mkdir()
    for index in range(2):
        cv2.imwrite(str(frames / f'{index}.png'), np.full((1024, 2048, 3), 40 * index, np.uint8))
    environment = {key: value for key, value in os.environ.items() if key != PROFILE_VARIABLE}
    source = subprocess.Popen([sys.executable, '-m', 'seg_perception.nodes.image_source', '--ros-args',
                               '-p', 'cameras:=[/large_images_test/image]', '-p', f'source:={frames}',
                               '-p', f'rate_hz:={rate_hz}'], env=environment, cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probe = ProbeNode('large_images_probe')
    received = []
    try:
        probe.node.create_subscription(Image, '/large_images_test/image', received.append, qos_profile_sensor_data)
        assert probe.spin_until(lambda: received, 60, lambda: source.poll() is None), 'no frame arrived'
        first = len(received)
        probe.spin_for(window_sec)
        arrived = len(received) - first
    finally:
        probe.close()
        source.terminate()
        output = source.communicate(timeout=15)[0]
    sent = window_sec * rate_hz
    assert arrived >= 0.5 * sent, f'{arrived} of about {sent:.0f} frames arrived'
    assert (received[0].width, received[0].height, len(received[0].data)) == (2048, 1024, 2048 * 1024 * 3)
    assert source.returncode == 0 and 'Traceback' not in output, output
