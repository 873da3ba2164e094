"""seg_perception_msgs messages cross a process boundary over real DDS, intact."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from seg_perception_msgs.msg import InstanceMaskArray, LabelSet

from message_samples import sample_instance_array, sample_label_set
from ros_helpers import ProbeNode
from seg_models.labels import cityscapes
from seg_perception.messages.label_info import label_set_from_msg
from seg_perception.messages.topics import LABEL_INFO_QOS, OUTPUT_QOS

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
