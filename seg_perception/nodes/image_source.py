"""A camera stand-in: publishes a folder of images, a video or generated frames as rgb8 images.

Publishes: image (sensor_msgs/Image rgb8; remap to the camera topic) at ``rate_hz``, or every
topic of ``cameras``: each its own source (``sources``, one per camera) or all the same ``source``.

    ros2 run seg_perception image_source --ros-args -p cameras:="[/front/image_raw, /rear/image_raw]"
"""
from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_models.data.frame_sources import SYNTHETIC, open_frames
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.topics import DEFAULT_CAMERAS, OUTPUT_QOS
from seg_perception.runtime.node_main import main_for
from seg_perception.runtime.parameters import ParameterSpec, ParameterValueError, declare_parameters

IMAGE_SOURCE_PARAMETERS = (
    ParameterSpec('source', SYNTHETIC, 'Folder of images, video file, or "synthetic" for generated frames.'),
    ParameterSpec('cameras', DEFAULT_CAMERAS, 'Topics to publish on; each frame goes out on all of them with the '
                                              'same stamp.'),
    ParameterSpec('sources', (), 'One source per camera (instead of source for all).'),
    ParameterSpec('rate_hz', 10.0, 'Publishing rate in frames per second.', value_range=(0.1, 1000.0)),
    ParameterSpec('frame_id', 'camera', 'frame_id written into every image header (with several cameras: '
                                        '<frame_id>_<index>).'),
    ParameterSpec('loop', True, 'Start again from the first frame after the last one.'),
    ParameterSpec('max_frames', 0, 'Frames per pass (0 = all; synthetic: 30).', value_range=(0, 10**9)),
)


class ImageSourceNode(Node):
    """Publishes the next frame of each source on every timer tick, looping unless told not to."""

    def __init__(self, **kwargs) -> None:
        super().__init__('image_source', **kwargs)
        self._settings = declare_parameters(self, IMAGE_SOURCE_PARAMETERS)
        cameras, sources = self._settings['cameras'], self._settings['sources']
        if sources and len(sources) != len(cameras):
            raise ParameterValueError(f'{len(sources)} sources for {len(cameras)} cameras: give one per camera, '
                                      f'or none (source for all)')
        self._sources = list(sources) or [self._settings['source']] * len(cameras)
        frame_id = self._settings['frame_id']
        self._frame_ids = [frame_id] if len(cameras) == 1 else [f'{frame_id}_{i}' for i in range(len(cameras))]
        self._frames = [self._open(source) for source in self._sources]
        self._publishers = [self.create_publisher(Image, camera, OUTPUT_QOS) for camera in cameras]
        self._timer = self.create_timer(1.0 / self._settings['rate_hz'], self._publish_next)

    def _open(self, source: str):
        return open_frames(source, self._settings['max_frames'])

    def _publish_next(self) -> None:
        stamp = self.get_clock().now().to_msg()
        for index, publisher in enumerate(self._publishers):
            frame = next(self._frames[index], None)
            if frame is None:
                if not self._settings['loop']:
                    self.get_logger().info(f'{self._sources[index]} exhausted; stopping publication')
                    self._timer.cancel()
                    return
                self._frames[index] = self._open(self._sources[index])
                frame = next(self._frames[index])
            header = Header(stamp=stamp, frame_id=self._frame_ids[index])
            publisher.publish(array_to_image_msg(frame.rgb, 'rgb8', header))


def main() -> None:
    main_for(ImageSourceNode, __doc__, lambda: IMAGE_SOURCE_PARAMETERS)


if __name__ == '__main__':
    main()
