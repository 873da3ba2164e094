"""Instances <-> seg_perception_msgs/InstanceMaskArray.

``instances_to_msg`` is what the instance node publishes: per instance its class, score, integer
box in full-image pixels and a lossless mono8 (0/255) mask cropped to that box;
``instances_from_msg`` reads it back into seg_models' InstanceResult (evaluation, overlays).
``full_frame_masks`` is the consumer's side, numpy only, the few lines a subscriber needs to get
full-frame boolean masks back (see ``nodes/instance_listener.py`` and docs/nodes/instance_listener.md).
"""
from __future__ import annotations

import numpy as np
from seg_perception_msgs.msg import InstanceMask, InstanceMaskArray
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from seg_models.segmenters.instance_postprocess import Instance, InstanceResult
from seg_perception.messages.images import array_to_image_msg, output_msg_to_array

MASK_ON = 255


def instances_to_msg(result: InstanceResult, header: Header, label_set_name: str) -> InstanceMaskArray:
    """The message for one image's instances (an empty ``instances`` list when none were found)."""
    height, width = result.image_size
    msg = InstanceMaskArray(header=header, image_height=height, image_width=width, label_set=label_set_name)
    for index, instance in enumerate(result.instances):
        x, y, roi_width, roi_height = instance.roi
        msg.instances.append(InstanceMask(
            instance_id=index, track_id=instance.track_id, class_id=instance.class_id,
            class_name=instance.class_name, score=instance.score,
            box=RegionOfInterest(x_offset=x, y_offset=y, width=roi_width, height=roi_height, do_rectify=False),
            mask=array_to_image_msg(instance.mask.view(np.uint8) * np.uint8(MASK_ON), 'mono8', header)))
    return msg


def instances_from_msg(msg: InstanceMaskArray) -> InstanceResult:
    """The instances of a message as an InstanceResult (box-cropped masks, box = the integer ROI)."""
    result = InstanceResult(image_size=(msg.image_height, msg.image_width))
    for instance in msg.instances:
        box = instance.box
        result.instances.append(Instance(
            class_id=instance.class_id, class_name=instance.class_name, score=instance.score,
            box=(box.x_offset, box.y_offset, box.x_offset + box.width, box.y_offset + box.height),
            roi=(box.x_offset, box.y_offset, box.width, box.height), mask=output_msg_to_array(instance.mask) > 0,
            track_id=instance.track_id))
    return result


def full_frame_masks(msg: InstanceMaskArray) -> np.ndarray:
    """(N, image_height, image_width) bool: each instance's mask placed at its box in the full frame.
    Every instance keeps its own mask, so overlapping instances stay separate."""
    masks = np.zeros((len(msg.instances), msg.image_height, msg.image_width), dtype=bool)
    for index, instance in enumerate(msg.instances):
        box, mask = instance.box, instance.mask
        rows = np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.step)[:, :mask.width]
        masks[index, box.y_offset:box.y_offset + box.height, box.x_offset:box.x_offset + box.width] = rows > 0
    return masks
