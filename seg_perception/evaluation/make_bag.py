"""A dataset as a rosbag2: camera images, CameraInfo and ground truth, stamped consistently.

Frame i is stamped ``start + i / rate`` on every topic (header stamp and bag time), so ground
truth, camera and later the nodes' outputs line up by stamp alone.
"""
from __future__ import annotations

from pathlib import Path

import cv2
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header, String
from tqdm import tqdm

from seg_perception.evaluation.bag_io import BagWriter
from seg_perception.evaluation.datasets import Dataset, Sample
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.topics import (CAMERA, CAMERA_INFO, COMPRESSED_SUFFIX, GROUND_TRUTH_INFO,
                                            GROUND_TRUTH_INSTANCES, GROUND_TRUTH_SEMANTIC)

START_TIME_NS = 1_700_000_000 * 10**9  # a fixed start: bags made twice are identical
COMPRESSIONS = ('none', 'jpeg', 'png')


def camera_info(sample: Sample, header: Header) -> CameraInfo:
    """Intrinsics from the dataset where it has them (Cityscapes), else nominal ones (focal length =
    image width, principal point at the centre), no distortion."""
    height, width = sample.rgb.shape[:2]
    fx, fy, cx, cy = sample.intrinsics or (float(width), float(width), width / 2.0, height / 2.0)
    return CameraInfo(header=header, height=height, width=width, distortion_model='plumb_bob', d=[0.0] * 5,
                      k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def _camera_message(sample: Sample, header: Header, compression: str):
    if compression == 'none':
        return array_to_image_msg(sample.rgb, 'rgb8', header)
    extension = '.jpg' if compression == 'jpeg' else '.png'
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(sample.rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'cannot encode {sample.name} as {compression}')
    return CompressedImage(header=header, format=f'rgb8; {compression} compressed bgr8', data=encoded.tobytes())


def make_bag(dataset: Dataset, output: Path, storage: str = 'mcap', rate_hz: float = 10.0,
             compression: str = 'none', frame_id: str = 'camera', camera_topic: str = CAMERA) -> int:
    """Write every sample of ``dataset`` to a new bag at ``output``; returns the number of frames."""
    if compression not in COMPRESSIONS:
        raise ValueError(f'compression {compression!r} is not one of {", ".join(COMPRESSIONS)}')
    image_topic = camera_topic + (COMPRESSED_SUFFIX if compression != 'none' else '')
    count = 0
    with BagWriter(output, storage) as bag:
        bag.write(GROUND_TRUTH_INFO, String(data=dataset.info.to_json()), START_TIME_NS)
        for index, sample in enumerate(tqdm(dataset.samples, total=len(dataset.names), desc='frames to bag',
                                            unit='frame')):
            stamp_ns = START_TIME_NS + int(round(index * 1e9 / rate_hz))
            header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)
            bag.write(image_topic, _camera_message(sample, header, compression), stamp_ns)
            bag.write(CAMERA_INFO, camera_info(sample, header), stamp_ns)
            if sample.semantic is not None:
                bag.write(GROUND_TRUTH_SEMANTIC, array_to_image_msg(sample.semantic, 'mono8', header), stamp_ns)
            if sample.instances is not None:
                bag.write(GROUND_TRUTH_INSTANCES, array_to_image_msg(sample.instances, 'mono16', header), stamp_ns)
            count += 1
    return count
