"""Image message conversion: every supported encoding, padded rows, and each kind of bad input."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.image_conversion import (ImageConversionError, array_to_image_msg, class_ids_to_image_msg,
                                             image_msg_to_rgb, output_msg_to_array)
from seg_perception.throttled_log import ThrottledErrorLog

RGB = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding, to_encoding', [
    ('rgb8', None), ('bgr8', cv2.COLOR_RGB2BGR), ('rgba8', cv2.COLOR_RGB2RGBA), ('bgra8', cv2.COLOR_RGB2BGRA)])
def test_colour_encodings_give_the_same_rgb(encoding, to_encoding):
    pixels = RGB if to_encoding is None else cv2.cvtColor(RGB, to_encoding)
    np.testing.assert_array_equal(image_msg_to_rgb(array_to_image_msg(pixels, encoding, Header())), RGB)


def test_mono8_is_replicated_to_three_channels():
    gray = RGB[:, :, 0]
    rgb = image_msg_to_rgb(array_to_image_msg(gray, 'mono8', Header()))
    assert rgb.shape == (7, 11, 3) and all(np.array_equal(rgb[:, :, c], gray) for c in range(3))


def test_row_padding_is_skipped():
    padded = np.zeros((7, 11 * 3 + 5), np.uint8)
    padded[:, :33] = RGB.reshape(7, 33)
    msg = array_to_image_msg(padded, 'rgb8', Header())
    msg.width = 11
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


def test_header_is_copied_and_class_ids_choose_mono8_or_mono16():
    header = Header(frame_id='cam')
    header.stamp.sec = 5
    msg = class_ids_to_image_msg(np.zeros((4, 6), np.uint8), header)
    assert (msg.encoding, msg.step, msg.header.frame_id, msg.header.stamp.sec) == ('mono8', 6, 'cam', 5)
    msg16 = class_ids_to_image_msg(np.full((4, 6), 300, np.uint16), header)
    assert (msg16.encoding, msg16.step) == ('mono16', 12)
    np.testing.assert_array_equal(output_msg_to_array(msg16), np.full((4, 6), 300, np.uint16))
    np.testing.assert_array_equal(output_msg_to_array(array_to_image_msg(RGB, 'rgb8', header)), RGB)
    with pytest.raises(ValueError):
        class_ids_to_image_msg(np.zeros((4, 6), np.int64), header)


def _message(**changes) -> Image:
    msg = array_to_image_msg(RGB, 'rgb8', Header())
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize('msg, kind, words', [
    (_message(encoding='yuv444'), 'encoding', 'unsupported encoding'),
    (_message(height=0), 'zero_size', 'zero-size'),
    (_message(step=20), 'step', 'step 20 is below 33'),
    (_message(data=bytes(10)), 'data_length', 'data holds 10 bytes'),
])
def test_bad_messages_raise_a_named_error(msg, kind, words):
    with pytest.raises(ImageConversionError, match=words) as error:
        image_msg_to_rgb(msg)
    assert error.value.kind == kind


def test_images_above_the_pixel_limit_are_refused():
    with pytest.raises(ImageConversionError, match='above the limit of 50') as error:
        image_msg_to_rgb(_message(), max_pixels=50)
    assert error.value.kind == 'too_large'


def test_throttled_log_reports_each_kind_and_counts_the_suppressed():
    now = [0.0]
    logged = []
    log = ThrottledErrorLog(logged.append, period_sec=5.0, clock=lambda: now[0])
    log.error('encoding', 'bad encoding')
    log.error('encoding', 'bad encoding')
    log.error('step', 'bad step')  # another kind is not hidden by the first
    now[0] = 6.0
    log.error('encoding', 'bad encoding')
    assert logged == ['bad encoding', 'bad step', 'bad encoding (1 more like this in the last 6 s)']
