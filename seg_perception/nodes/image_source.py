"""A camera stand-in: publishes a folder of images, a video or generated frames as rgb8 images.

Publishes: image (sensor_msgs/Image rgb8; remap to the camera topic) at ``rate_hz``.
"""
from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_models.frame_sources import SYNTHETIC, open_frames
from seg_perception.messages.images import array_to_image_msg
from seg_perception.messages.topics import CAMERA_INPUT, OUTPUT_QOS
from seg_perception.runtime.node_main import main_for
from seg_perception.runtime.parameters import ParameterSpec, declare_parameters

IMAGE_SOURCE_PARAMETERS = (
    ParameterSpec('source', SYNTHETIC, 'Folder of images, video file, or "synthetic" for generated frames.'),
    ParameterSpec('rate_hz', 10.0, 'Publishing rate in frames per second.', value_range=(0.1, 1000.0)),
    ParameterSpec('frame_id', 'camera', 'frame_id written into every image header.'),
    ParameterSpec('loop', True, 'Start again from the first frame after the last one.'),
    ParameterSpec('max_frames', 0, 'Frames per pass (0 = all; synthetic: 30).', value_range=(0, 10**9)),
)


class ImageSourceNode(Node):
    """Publishes the next frame of its source on every timer tick, looping unless told not to."""

    def __init__(self, **kwargs) -> None:
        super().__init__('image_source', **kwargs)
        self._settings = declare_parameters(self, IMAGE_SOURCE_PARAMETERS)
        self._frames = self._open()
        self._publisher = self.create_publisher(Image, CAMERA_INPUT, OUTPUT_QOS)
        self._timer = self.create_timer(1.0 / self._settings['rate_hz'], self._publish_next)

    def _open(self):
        return open_frames(self._settings['source'], self._settings['max_frames'])

    def _publish_next(self) -> None:
        frame = next(self._frames, None)
        if frame is None:
            if not self._settings['loop']:
                self.get_logger().info('source exhausted; stopping publication')
                self._timer.cancel()
                return
            self._frames = self._open()
            frame = next(self._frames)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._settings['frame_id'])
        self._publisher.publish(array_to_image_msg(frame.rgb, 'rgb8', header))


def main() -> None:
    main_for(ImageSourceNode)


if __name__ == '__main__':
    main()
