"""The semantic node as launch runs it: its own process, real images over DDS, real outputs back."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from camera_encodings import ALL_ENCODINGS, encode_image_msg
from ros_helpers import CameraProbe, NodeProcess
from seg_models.data.labels import cityscapes
from seg_models.segmenters.semantic import SemanticModelConfig, create_semantic_segmenter
from seg_perception.messages.images import array_to_image_msg, output_msg_to_array as as_array
from shared_data import driving_frames

pytestmark = pytest.mark.ros

SEMANTIC_MODULE = 'seg_perception.nodes.semantic_segmentation'
NODE_START_TIMEOUT = 90.0
FRAME_TIMEOUT = 30.0
MAX_PIXELS = 2_000_000


def camera_frame() -> np.ndarray:
    return driving_frames(1)[0]


@pytest.fixture(scope='module')
def semantic(tmp_path_factory, deeplabv3plus_checkpoint):
    """A node on /camera/image_raw (32FC1 confidence, overlay alpha 0.25) and its probe: ``labels``,
    ``colors``, ``overlays`` and ``confidences`` keep its outputs by stamp."""
    log = tmp_path_factory.mktemp('logs') / 'semantic_node.log'
    ros_args = ['-r', 'image:=/camera/image_raw', '-p', 'input_height:=96', '-p', 'input_width:=128',
                '-p', 'input_reliability:=reliable', '-p', f'max_image_pixels:={MAX_PIXELS}',
                '-p', f'checkpoint:={deeplabv3plus_checkpoint}', '-p', 'confidence_output:=32FC1',
                '-p', 'overlay_alpha:=0.25']
    with NodeProcess(SEMANTIC_MODULE, ros_args, log) as node:
        probe = CameraProbe('semantic_probe', node, camera='/camera/image_raw', timeout=FRAME_TIMEOUT)
        try:
            probe.labels = probe.listen('/segmentation/semantic')
            probe.colors = probe.listen('/semantic_segmentation/color')
            probe.overlays = probe.listen('/semantic_segmentation/overlay')
            probe.confidences = probe.listen('/segmentation/semantic/confidence')
            probe.connect(timeout=NODE_START_TIMEOUT)
            yield probe
        finally:
            probe.close()


@pytest.mark.parametrize('encoding', ALL_ENCODINGS)
def test_label_image_keeps_header_and_camera_resolution(semantic, encoding):
    key = semantic.send(encode_image_msg(camera_frame(), encoding))
    labels = semantic.result(key)
    assert (labels.header.stamp.sec, labels.header.stamp.nanosec) == key
    assert labels.header.frame_id == 'front_camera'
    assert (labels.height, labels.width, labels.encoding, labels.step) == (360, 480, 'mono8', 480)
    assert as_array(labels).max() < 19


def test_output_equals_the_segmenter_with_the_same_checkpoint(semantic, deeplabv3plus_checkpoint):
    """The node runs the network it was given: its pixels equal seg_models' own result."""
    rgb = camera_frame()
    key = semantic.send(encode_image_msg(rgb, 'bgr8'))
    segmenter = create_semantic_segmenter(SemanticModelConfig(checkpoint=str(deeplabv3plus_checkpoint),
                                                              input_size=(96, 128), with_confidence=True))
    expected = segmenter.segment([rgb])[0]
    np.testing.assert_array_equal(as_array(semantic.result(key)), expected.class_ids)
    confidence = semantic.result(key, semantic.confidences)
    assert (confidence.encoding, confidence.height, confidence.width) == ('32FC1', 360, 480)
    np.testing.assert_allclose(as_array(confidence), expected.confidence, atol=1e-4)
    assert 'UNTRAINED' not in semantic.logs()


def test_padded_rows_are_read_correctly(semantic):
    rgb = camera_frame()
    padded = np.zeros((360, 480 * 3 + 64), np.uint8)
    padded[:, :480 * 3] = rgb.reshape(360, -1)
    msg = array_to_image_msg(padded, 'rgb8', Header())
    msg.width = 480
    reference = semantic.result(semantic.send(array_to_image_msg(rgb, 'rgb8', Header())))
    np.testing.assert_array_equal(as_array(semantic.result(semantic.send(msg))), as_array(reference))


def test_color_and_overlay_views_show_the_labels(semantic):
    rgb = camera_frame()
    key = semantic.send(array_to_image_msg(rgb, 'rgb8', Header()))
    labels = as_array(semantic.result(key))
    color = semantic.result(key, semantic.colors)
    assert color.encoding == 'rgb8' and color.header.frame_id == 'front_camera'
    np.testing.assert_array_equal(as_array(color), cityscapes().palette()[labels])
    overlay = semantic.result(key, semantic.overlays)
    assert (overlay.encoding, overlay.height, overlay.width) == ('rgb8', 360, 480)
    expected = 0.75 * rgb.astype(np.float64) + 0.25 * cityscapes().palette()[labels]
    assert np.abs(as_array(overlay).astype(np.float64) - expected).max() <= 1.0


def test_label_set_reaches_a_late_subscriber(semantic):
    received = semantic.label_info('/segmentation/semantic/label_info')
    semantic.wait_for(lambda: received, 'no label set', 10)
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
        semantic.wait_for(lambda: problem in semantic.logs(), f'no error naming {problem!r} in the node log')
        semantic.result(semantic.send(good))  # still serving
        assert key not in semantic.labels, f'published a result for a bad image ({problem})'


def test_stamps_before_the_epoch_are_answered_and_impossible_ones_refused(semantic):
    """A negative stamp used to kill the inference worker (rclpy's Time refuses it) and every later
    frame went unanswered; builtin_interfaces allows it, so it is answered. Nanoseconds of a second or
    more cannot be carried on, so that frame is refused."""
    before_epoch = semantic.send(array_to_image_msg(camera_frame(), 'rgb8', Header()), stamp=Time(sec=-5))
    assert before_epoch == (-5, 0) and semantic.result(before_epoch).header.frame_id == 'front_camera'
    semantic.send(array_to_image_msg(camera_frame(), 'rgb8', Header()), stamp=Time(sec=7, nanosec=2_000_000_000))
    semantic.wait_for(lambda: 'nanosec 2000000000 is not in [0, 1e9)' in semantic.logs(), 'no error for the stamp')
    semantic.result(semantic.send(array_to_image_msg(camera_frame(), 'rgb8', Header())))  # still serving
    assert (7, 2_000_000_000) not in semantic.labels


@pytest.fixture(scope='module')
def compressed(tmp_path_factory, deeplabv3plus_checkpoint):
    """A node on image/compressed with mono8 confidence, whose threshold (the test frame's median
    confidence) unlabels about half the pixels; in its own namespace, beside the other node."""
    segmenter = create_semantic_segmenter(SemanticModelConfig(checkpoint=str(deeplabv3plus_checkpoint),
                                                              input_size=(96, 128), with_confidence=True))
    threshold = round(float(np.median(segmenter.segment([camera_frame()])[0].confidence)), 6)
    ros_args = ['-r', '__ns:=/compressed', '-r', 'image:=/camera/image_raw', '-p', 'input_height:=96',
                '-p', 'input_width:=128', '-p', 'input_reliability:=reliable',
                '-p', f'checkpoint:={deeplabv3plus_checkpoint}', '-p', 'input_transport:=compressed',
                '-p', 'confidence_output:=mono8', '-p', f'confidence_threshold:={threshold}']
    with NodeProcess(SEMANTIC_MODULE, ros_args, tmp_path_factory.mktemp('logs') / 'log') as node:
        probe = CameraProbe('compressed_probe', node, camera='/camera/image_raw/compressed',
                            camera_type=CompressedImage, timeout=FRAME_TIMEOUT)
        try:
            probe.labels = probe.listen('/compressed/segmentation/semantic')
            probe.confidences = probe.listen('/compressed/segmentation/semantic/confidence')
            probe.label_sets = probe.label_info('/compressed/segmentation/semantic/label_info')
            probe.connect(timeout=NODE_START_TIMEOUT)
            probe.segmenter, probe.threshold = segmenter, threshold
            yield probe
        finally:
            probe.close()


def _compressed_msg(rgb: np.ndarray, extension: str) -> CompressedImage:
    encoded = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1]
    return CompressedImage(format=f'rgb8; {extension[1:]} compressed bgr8', data=encoded.tobytes())


def test_png_input_gives_the_segmenter_result_with_unsure_pixels_unlabeled(compressed):
    rgb = camera_frame()
    key = compressed.send(_compressed_msg(rgb, '.png'))
    labels = as_array(compressed.result(key))
    expected = compressed.segmenter.segment([rgb])[0]
    np.testing.assert_array_equal(labels, expected.unlabel_below(compressed.threshold, 255).class_ids)
    assert 0.2 < np.mean(labels == 255) < 0.8
    confidence = compressed.result(key, compressed.confidences)
    assert confidence.encoding == 'mono8'
    assert np.abs(as_array(confidence).astype(int) - np.rint(expected.confidence * 255)).max() <= 1
    compressed.wait_for(lambda: compressed.label_sets, 'no label set', 10)
    assert compressed.label_sets[0].threshold == pytest.approx(compressed.threshold)


def test_jpeg_input_keeps_header_and_camera_resolution(compressed):
    key = compressed.send(_compressed_msg(camera_frame(), '.jpg'), frame_id='left_camera')
    labels = compressed.result(key)
    assert (labels.header.stamp.sec, labels.header.stamp.nanosec) == key
    assert (labels.header.frame_id, labels.height, labels.width, labels.encoding) == ('left_camera', 360, 480, 'mono8')


def test_undecodable_compressed_image_is_dropped_with_a_named_error(compressed):
    key = compressed.send(CompressedImage(format='jpeg', data=b'\xff\xd8 not a jpeg at all'))
    compressed.wait_for(lambda: 'cannot be decoded' in compressed.logs(), 'undecodable image not reported')
    compressed.result(compressed.send(_compressed_msg(camera_frame(), '.png')))  # still serving
    assert key not in compressed.labels


def test_invalid_parameter_stops_start_up_with_a_clear_message(tmp_path):
    with NodeProcess(SEMANTIC_MODULE, ['-p', 'architecture:=deeplabv3plus_vgg'],
                     tmp_path / 'log') as node:
        assert node.wait(timeout=NODE_START_TIMEOUT) == 2  # a usage error
        assert "parameter 'architecture' = 'deeplabv3plus_vgg' is not allowed" in node.output()


def test_corrupt_checkpoint_stops_start_up_with_a_clear_message(tmp_path):
    corrupt = tmp_path / 'broken.pth'
    corrupt.write_bytes(b'\x80\x02 truncated')
    with NodeProcess(SEMANTIC_MODULE, ['-p', f'checkpoint:={corrupt}'], tmp_path / 'log') as node:
        assert node.wait(timeout=NODE_START_TIMEOUT) == 1
        assert f'checkpoint {corrupt} is corrupt' in node.output()
