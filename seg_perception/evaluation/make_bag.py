"""A dataset as a rosbag2: camera images, CameraInfo and ground truth, stamped consistently.

Frame i is stamped ``start + i / rate`` on every topic (header stamp and bag time), so ground
truth, camera and later the nodes' outputs line up by stamp alone. Several cameras (one dataset
each, or one for all) share the stamps; each has its CameraInfo and ground truth in its namespace
(``topics.camera_bag_topics``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header, String
from tqdm import tqdm

from seg_perception.evaluation.bag_io import BagWriter
from seg_models.data.datasets import Dataset, Sample
from seg_perception.messages.images import array_to_image_msg, rgb_to_camera_msg
from seg_perception.messages.topics import CAMERA, COMPRESSED_SUFFIX, GROUND_TRUTH_INFO, camera_bag_topics

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


def make_bag(datasets: Sequence[Dataset], output: Path, storage: str = 'mcap', rate_hz: float = 10.0,
             compression: str = 'none', frame_id: str = 'camera', camera_topics: Sequence[str] = (CAMERA,)) -> int:
    """Write the samples of ``datasets`` (one per camera topic, or one for all) to a new bag at
    ``output``; returns the number of frames per camera."""
    if compression not in COMPRESSIONS:
        raise ValueError(f'compression {compression!r} is not one of {", ".join(COMPRESSIONS)}')
    if len(datasets) not in (1, len(camera_topics)):
        raise ValueError(f'{len(datasets)} sources for {len(camera_topics)} camera topics: give one source, or one '
                         f'per camera')
    if len({dataset.info.label_set for dataset in datasets}) > 1:
        raise ValueError('the sources\' ground truth uses different label sets; one bag holds one')
    datasets = list(datasets) * (len(camera_topics) // len(datasets))
    cameras = [camera_bag_topics(topic, None if len(camera_topics) == 1 else index)
               for index, topic in enumerate(camera_topics)]
    frame_ids = [frame_id] if len(cameras) == 1 else [f'{frame_id}_{index}' for index in range(len(cameras))]
    suffix = COMPRESSED_SUFFIX if compression != 'none' else ''
    count = 0
    with BagWriter(output, storage) as bag:
        bag.write(GROUND_TRUTH_INFO, String(data=datasets[0].info.to_json()), START_TIME_NS)
        frames = zip(*(dataset.samples for dataset in datasets))
        total = min(len(dataset.names) for dataset in datasets)
        for index, samples in enumerate(tqdm(frames, total=total, desc='frames to bag', unit='frame')):
            stamp_ns = START_TIME_NS + int(round(index * 1e9 / rate_hz))
            for camera, sample, camera_frame_id in zip(cameras, samples, frame_ids):
                header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=camera_frame_id)
                bag.write(camera.camera + suffix, rgb_to_camera_msg(sample.rgb, header, compression), stamp_ns)
                bag.write(camera.camera_info, camera_info(sample, header), stamp_ns)
                if sample.semantic is not None:
                    bag.write(camera.ground_truth_semantic, array_to_image_msg(sample.semantic, 'mono8', header),
                              stamp_ns)
                if sample.instances is not None:
                    bag.write(camera.ground_truth_instances, array_to_image_msg(sample.instances, 'mono16', header),
                              stamp_ns)
            count += 1
    return count
