"""Deterministic sample messages, built the same way in a publishing process and in the test."""
import numpy as np
from sensor_msgs.msg import RegionOfInterest
from seg_perception_msgs.msg import InstanceMask, InstanceMaskArray
from std_msgs.msg import Header
from builtin_interfaces.msg import Time

from seg_models.data.labels import cityscapes
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.label_info import label_set_to_msg

SAMPLE_HEADER = Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id='front_camera_optical')


def _instance(instance_id, class_id, name, score, x, y, width, height, seed):
    mask = (np.random.default_rng(seed).random((height, width)) > 0.5).astype(np.uint8) * 255
    return InstanceMask(
        instance_id=instance_id, class_id=class_id, class_name=name, score=score,
        box=RegionOfInterest(x_offset=x, y_offset=y, width=width, height=height, do_rectify=False),
        mask=array_to_image_msg(mask, 'mono8', SAMPLE_HEADER))


def sample_instance_array() -> InstanceMaskArray:
    """Two overlapping cars and a distant pedestrian on a 2048x1024 frame (float32-exact scores)."""
    return InstanceMaskArray(
        header=SAMPLE_HEADER, image_height=1024, image_width=2048, label_set='cityscapes_things',
        instances=[
            _instance(0, 2, 'car', 0.96875, 100, 400, 300, 180, seed=1),
            _instance(1, 2, 'car', 0.8125, 250, 450, 280, 160, seed=2),  # overlaps instance 0
            _instance(2, 0, 'person', 0.5625, 1500, 500, 12, 30, seed=3),
        ])


def sample_label_set():
    return label_set_to_msg(cityscapes(), threshold=0.5)
