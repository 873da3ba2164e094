"""The semantic node as launch runs it: its own process, real images over DDS, real outputs back."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from seg_perception_msgs.msg import LabelSet
from std_msgs.msg import Header

from ros_helpers import NodeProcess, ProbeNode, driving_frames
from seg_models.labels import cityscapes
from seg_models.semantic import SemanticModelConfig, create_semantic_segmenter
from seg_perception.image_conversion import array_to_image_msg, output_msg_to_array as as_array
from seg_perception.label_info import LABEL_INFO_QOS
from seg_perception.topics import OUTPUT_QOS

NODE_START_TIMEOUT = 90.0
FRAME_TIMEOUT = 30.0
MAX_PIXELS = 2_000_000
_stamps = itertools.count(1)


def camera_frame() -> np.ndarray:
    return driving_frames(1)[0]


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    conversions = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'rgba8': cv2.COLOR_RGB2RGBA,
                   'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY}
    return rgb if conversions[encoding] is None else cv2.cvtColor(rgb, conversions[encoding])


class SemanticClient:
    """Publishes camera images to the node and collects its outputs by stamp."""

    def __init__(self, probe: ProbeNode, node: NodeProcess) -> None:
        self.probe, self.node = probe, node
        self.labels: dict[tuple[int, int], Image] = {}
        self.colors: dict[tuple[int, int], Image] = {}
        self.publisher = probe.node.create_publisher(Image, '/camera/image_raw', OUTPUT_QOS)
        probe.node.create_subscription(Image, '/segmentation/semantic', self._store(self.labels), OUTPUT_QOS)

    @staticmethod
    def _store(store):
        return lambda msg: store.__setitem__((msg.header.stamp.sec, msg.header.stamp.nanosec), msg)

    def subscribe_color(self) -> None:
        self.probe.node.create_subscription(Image, '/semantic_segmentation/color', self._store(self.colors), OUTPUT_QOS)

    def _check_alive(self) -> None:
        assert self.node.alive(), f'node died:\n{self.node.output()}'

    def wait_ready(self) -> None:
        assert self.probe.spin_until(lambda: self.publisher.get_subscription_count() > 0, NODE_START_TIMEOUT,
                                     self._check_alive), f'node never subscribed:\n{self.node.output()}'

    def send(self, msg: Image, frame_id: str = 'front_camera') -> tuple[int, int]:
        stamp = Time(sec=1000 + next(_stamps), nanosec=250_000_000)
        msg.header = Header(stamp=stamp, frame_id=frame_id)
        self.publisher.publish(msg)
        return stamp.sec, stamp.nanosec

    def result(self, key, store=None, timeout=FRAME_TIMEOUT) -> Image:
        store = self.labels if store is None else store
        assert self.probe.spin_until(lambda: key in store, timeout, self._check_alive), \
            f'no output for stamp {key}:\n{self.node.output()}'
        return store[key]


@pytest.fixture(scope='module')
def semantic(tmp_path_factory, checkpoint):
    log = tmp_path_factory.mktemp('logs') / 'semantic_node.log'
    ros_args = ['-r', 'image:=/camera/image_raw', '-p', 'input_height:=96', '-p', 'input_width:=128',
                '-p', 'input_reliability:=reliable', '-p', f'max_image_pixels:={MAX_PIXELS}',
                '-p', f'checkpoint:={checkpoint}']
    with NodeProcess('seg_perception.semantic_node', ros_args, log) as node:
        probe = ProbeNode('semantic_probe')
        try:
            client = SemanticClient(probe, node)
            client.subscribe_color()
            client.wait_ready()
            yield client
        finally:
            probe.close()


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
def test_label_image_keeps_header_and_camera_resolution(semantic, encoding):
    rgb = camera_frame()
    key = semantic.send(array_to_image_msg(encode(rgb, encoding), encoding, Header()))
    labels = semantic.result(key)
    assert (labels.header.stamp.sec, labels.header.stamp.nanosec) == key
    assert labels.header.frame_id == 'front_camera'
    assert (labels.height, labels.width, labels.encoding, labels.step) == (360, 480, 'mono8', 480)
    assert as_array(labels).max() < 19


def test_output_equals_the_segmenter_with_the_same_checkpoint(semantic, checkpoint):
    """The node runs the network it was given: its pixels equal seg_models' own result."""
    rgb = camera_frame()
    key = semantic.send(array_to_image_msg(encode(rgb, 'bgr8'), 'bgr8', Header()))
    segmenter = create_semantic_segmenter(SemanticModelConfig(checkpoint=str(checkpoint), input_size=(96, 128)))
    expected = segmenter.segment([rgb])[0].class_ids
    np.testing.assert_array_equal(as_array(semantic.result(key)), expected)
    assert 'UNTRAINED' not in semantic.node.output()


def test_padded_rows_are_read_correctly(semantic):
    rgb = camera_frame()
    padded = np.zeros((360, 480 * 3 + 64), np.uint8)
    padded[:, :480 * 3] = rgb.reshape(360, -1)
    msg = array_to_image_msg(padded, 'rgb8', Header())
    msg.width = 480
    reference = semantic.result(semantic.send(array_to_image_msg(rgb, 'rgb8', Header())))
    np.testing.assert_array_equal(as_array(semantic.result(semantic.send(msg))), as_array(reference))


def test_color_view_is_the_palette_of_the_labels(semantic):
    key = semantic.send(array_to_image_msg(camera_frame(), 'rgb8', Header()))
    labels = as_array(semantic.result(key))
    color = semantic.result(key, semantic.colors)
    assert color.encoding == 'rgb8' and color.header.frame_id == 'front_camera'
    np.testing.assert_array_equal(as_array(color), cityscapes().palette()[labels])


def test_label_set_reaches_a_late_subscriber(semantic):
    received = []
    semantic.probe.node.create_subscription(LabelSet, '/segmentation/semantic/label_info', received.append,
                                            LABEL_INFO_QOS)
    assert semantic.probe.spin_until(lambda: received, 10)
    assert [c.name for c in received[0].classes] == cityscapes().names
    assert received[0].name == 'cityscapes' and received[0].ignore_id == 255


def _bad_images():
    good = array_to_image_msg(camera_frame(), 'rgb8', Header())
    wrong_encoding = array_to_image_msg(camera_frame(), 'rgb8', Header())
    wrong_encoding.encoding = '32FC1'
    truncated = array_to_image_msg(camera_frame(), 'rgb8', Header())
    truncated.data = bytes(truncated.data[: len(truncated.data) // 2])
    zero = Image(height=0, width=0, encoding='rgb8', step=0)
    huge_rows = 2 * MAX_PIXELS // 100
    huge = array_to_image_msg(np.zeros((huge_rows, 100, 3), np.uint8), 'rgb8', Header())
    return good, {'unsupported encoding': wrong_encoding, 'step * height': truncated, 'zero-size': zero,
                  'above the limit': huge}


def test_bad_images_are_dropped_with_a_named_error_and_the_node_keeps_serving(semantic):
    good, bad = _bad_images()
    for problem, msg in bad.items():
        # One at a time: the input keeps only the newest frame, so a burst would drop some unseen.
        key = semantic.send(msg)
        assert semantic.probe.spin_until(lambda: problem in semantic.node.output(), FRAME_TIMEOUT), \
            f'no error naming {problem!r} in the node log:\n{semantic.node.output()}'
        semantic.result(semantic.send(good))  # still serving
        assert key not in semantic.labels, f'published a result for a bad image ({problem})'


def test_invalid_parameter_stops_start_up_with_a_clear_message(tmp_path):
    with NodeProcess('seg_perception.semantic_node', ['-p', 'architecture:=deeplabv3plus_vgg'],
                     tmp_path / 'log') as node:
        assert node.wait(timeout=NODE_START_TIMEOUT) == 1
        assert "parameter 'architecture' = 'deeplabv3plus_vgg' is not allowed" in node.output()


def test_corrupt_checkpoint_stops_start_up_with_a_clear_message(tmp_path):
    corrupt = tmp_path / 'broken.pth'
    corrupt.write_bytes(b'\x80\x02 truncated')
    with NodeProcess('seg_perception.semantic_node', ['-p', f'checkpoint:={corrupt}'], tmp_path / 'log') as node:
        assert node.wait(timeout=NODE_START_TIMEOUT) == 1
        assert f'checkpoint {corrupt} is corrupt' in node.output()
