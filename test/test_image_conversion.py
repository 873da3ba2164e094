"""Image message conversion: every supported encoding, padded rows, and each kind of bad input."""
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from camera_encodings import encode_image_msg, mosaic
from seg_perception.messages.images import (CAMERA_ENCODINGS, ImageConversionError, array_to_image_msg,
                                             class_ids_to_image_msg, compressed_msg_to_rgb, cv_bridge_if_installed,
                                             image_msg_to_rgb, output_msg_to_array)
from seg_perception.runtime.throttled_log import ThrottledErrorLog

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


def test_throttled_log_lines_are_bounded_whatever_a_message_carries():
    logged = []
    bad = Image(encoding='x' * 9000, height=1, width=1, step=3, data=b'abc')
    with pytest.raises(ImageConversionError) as error:
        image_msg_to_rgb(bad)
    ThrottledErrorLog(logged.append, 5.0).error(error.value.kind, f'dropped image: {error.value}')
    assert len(logged[0]) < 500 and logged[0].endswith('characters)')


# --- camera encodings beyond 8-bit colour: Bayer, YUV 4:2:2, 16 bit, compressed ---------------------

@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
@pytest.mark.parametrize('bits', [8, 16])
def test_bayer_patterns_demosaic_to_the_right_colours(pattern, bits):
    dtype, scale = (np.uint8, 1) if bits == 8 else (np.uint16, 257)
    for colour in ([200, 0, 0], [0, 180, 0], [0, 0, 160], [90, 140, 30]):
        flat = np.tile(np.array(colour, dtype) * scale, (8, 10, 1))
        rgb = image_msg_to_rgb(array_to_image_msg(mosaic(flat, pattern), f'bayer_{pattern}{bits}', Header()))
        assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8
        np.testing.assert_allclose(rgb[2:-2, 2:-2], np.tile(colour, (4, 6, 1)), atol=1)


@pytest.mark.parametrize('encoding', ['yuv422', 'yuv422_yuy2'])
def test_yuv422_byte_orders(encoding):
    pairs = np.repeat(RGB[:, :5], 2, axis=1)  # pixel pairs share chroma in 4:2:2: one colour per pair
    rgb = image_msg_to_rgb(encode_image_msg(pairs, encoding))
    np.testing.assert_allclose(rgb.astype(int), pairs.astype(int), atol=3)


def test_yuv422_with_an_odd_width_is_refused():
    msg = array_to_image_msg(np.zeros((4, 5, 2), np.uint8), 'yuv422', Header())
    with pytest.raises(ImageConversionError, match='even width') as error:
        image_msg_to_rgb(msg)
    assert error.value.kind == 'odd_width'


@pytest.mark.parametrize('encoding, to_encoding', [
    ('rgb16', None), ('bgr16', cv2.COLOR_RGB2BGR), ('rgba16', cv2.COLOR_RGB2RGBA), ('bgra16', cv2.COLOR_RGB2BGRA)])
@pytest.mark.parametrize('big_endian', [False, True])
def test_16_bit_encodings_keep_their_top_byte_in_either_byte_order(encoding, to_encoding, big_endian):
    wide = RGB.astype(np.uint16) * 256 + 77  # the low byte must not leak into the result
    pixels = wide if to_encoding is None else cv2.cvtColor(wide, to_encoding)
    if big_endian:
        pixels = pixels.astype('>u2')
    msg = array_to_image_msg(pixels.view(np.uint8).reshape(pixels.shape[0], -1), encoding, Header())
    msg.width, msg.is_bigendian = RGB.shape[1], int(big_endian)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


def test_mono16_narrows_to_gray_rgb():
    gray = RGB[:, :, 1]
    rgb = image_msg_to_rgb(array_to_image_msg(gray.astype(np.uint16) << 8, 'mono16', Header()))
    assert all(np.array_equal(rgb[:, :, c], gray) for c in range(3))


def test_bayer_image_too_small_to_demosaic_is_a_named_error_or_an_image():
    msg = array_to_image_msg(np.zeros((1, 1), np.uint8), 'bayer_rggb8', Header())
    try:
        assert image_msg_to_rgb(msg).shape == (1, 1, 3)
    except ImageConversionError as error:
        assert error.kind == 'conversion'


def _compressed(image: np.ndarray, extension: str, fmt: str) -> CompressedImage:
    ok, encoded = cv2.imencode(extension, image)
    assert ok
    return CompressedImage(format=fmt, data=encoded.tobytes())


def test_png_compressed_images_decode_losslessly():
    bgr = cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(compressed_msg_to_rgb(_compressed(bgr, '.png', 'rgb8; png compressed bgr8')), RGB)
    gray16 = RGB[:, :, 2].astype(np.uint16) << 8
    rgb = compressed_msg_to_rgb(_compressed(gray16, '.png', 'mono16; png compressed mono16'))
    assert all(np.array_equal(rgb[:, :, c], RGB[:, :, 2]) for c in range(3))


def test_jpeg_compressed_images_decode_close_to_the_original():
    smooth = cv2.resize(RGB, (160, 112), interpolation=cv2.INTER_CUBIC)
    msg = _compressed(cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR), '.jpg', 'rgb8; jpeg compressed bgr8')
    rgb = compressed_msg_to_rgb(msg)
    assert rgb.shape == (112, 160, 3)
    assert np.abs(rgb.astype(int) - smooth).mean() < 6


def _png_claiming_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (valid CRC), followed by a tiny image's data."""
    data = bytearray(cv2.imencode('.png', np.zeros((2, 2), np.uint8))[1].tobytes())
    data[16:24] = struct.pack('>II', width, height)
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize('data, kind, words', [
    (b'', 'zero_size', 'no data'),
    (b'\xff\xd8\xff\xe0 not really a jpeg', 'undecodable', 'cannot be decoded'),
    (b'garbage' * 20, 'format', 'neither JPEG nor PNG'),
    (_png_claiming_size(10000, 8000), 'too_large', 'above the limit'),
    (_png_claiming_size(60000, 60000), 'too_large', r'60000x60000 has 3600000000 pixels, above the limit of 50000000$'),
    (_png_claiming_size(8, 8), 'undecodable', 'corrupt PNG: image file is truncated'),  # header fine, data short
    # Cut inside the last chunk's CRC: every pixel is there and Pillow decodes it (found by the fuzz test).
    (cv2.imencode('.png', np.zeros((8, 8), np.uint8))[1].tobytes()[:-15], 'undecodable', 'no IEND chunk'),
], ids=['empty', 'jpeg_marker_only', 'garbage', 'above_limit', 'decompression_bomb', 'truncated', 'cut_in_crc'])
def test_bad_compressed_images_raise_a_named_error(data, kind, words):
    with pytest.raises(ImageConversionError, match=words) as error:
        compressed_msg_to_rgb(CompressedImage(format='png', data=data), max_pixels=50_000_000)
    assert error.value.kind == kind


def _encoded(extension: str, image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(extension, image)
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize('extension, image', [
    ('.tiff', np.zeros((4, 6), np.float32)),  # 32-bit samples came back at double width
    ('.tiff', np.zeros((4, 6, 3), np.uint8)), ('.bmp', np.zeros((4, 6, 3), np.uint8)),
    ('.webp', np.zeros((4, 6, 3), np.uint8)), ('.ppm', np.zeros((4, 6, 3), np.uint8)),
], ids=['tiff32', 'tiff8', 'bmp', 'webp', 'ppm'])
def test_formats_other_than_jpeg_and_png_are_refused_by_name(extension, image):
    with pytest.raises(ImageConversionError, match='neither JPEG nor PNG') as error:
        compressed_msg_to_rgb(CompressedImage(format=extension[1:], data=_encoded(extension, image)))
    assert error.value.kind == 'format'


def test_gif_is_refused_by_name():
    gif = io.BytesIO()
    PILImage.new('RGB', (6, 4)).save(gif, format='GIF')
    with pytest.raises(ImageConversionError, match='neither JPEG nor PNG'):
        compressed_msg_to_rgb(CompressedImage(format='gif', data=gif.getvalue()))


def test_jpeg_whose_header_declares_more_than_its_data_is_refused():
    """OpenCV answers an 8x8 JPEG whose header says 65000x1 with a grey 1x65000 image."""
    data = bytearray(_encoded('.jpg', np.full((8, 8, 3), 90, np.uint8)))
    start_of_frame = data.index(b'\xff\xc0')
    data[start_of_frame + 5:start_of_frame + 9] = struct.pack('>HH', 1, 65000)
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR).shape == (1, 65000, 3)
    with pytest.raises(ImageConversionError, match='corrupt JPEG.*premature end') as error:
        compressed_msg_to_rgb(CompressedImage(format='jpeg', data=bytes(data)))
    assert error.value.kind == 'undecodable'
    truncated = _encoded('.jpg', np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))[:-100]
    with pytest.raises(ImageConversionError, match='corrupt JPEG'):
        compressed_msg_to_rgb(CompressedImage(format='jpeg', data=truncated))


@pytest.mark.parametrize('mode', ['P', 'LA', 'RGBA', '1'])
def test_png_of_every_colour_type_decodes_to_rgb(mode):
    image = PILImage.fromarray(RGB).convert(mode)
    encoded = io.BytesIO()
    image.save(encoded, format='PNG')
    rgb = compressed_msg_to_rgb(CompressedImage(format='png', data=encoded.getvalue()))
    np.testing.assert_array_equal(rgb, np.asarray(image.convert('RGB')))


def test_16_bit_colour_png_keeps_the_top_byte():
    rgb16 = RGB.astype(np.uint16) << 8 | 0x7F
    rgb = compressed_msg_to_rgb(CompressedImage(format='png', data=_encoded('.png', cv2.cvtColor(rgb16,
                                                                                                 cv2.COLOR_RGB2BGR))))
    np.testing.assert_array_equal(rgb, RGB)


def test_default_pixel_limit_refuses_a_small_file_declaring_a_huge_image_before_decoding():
    """An 8000x8000 PNG of a few KB used to be decoded (and run through a full-size network)."""
    with pytest.raises(ImageConversionError, match='above the limit of 16777216') as error:
        compressed_msg_to_rgb(CompressedImage(format='png', data=_png_claiming_size(8000, 8000)))
    assert error.value.kind == 'too_large'


CV_BRIDGE = cv_bridge_if_installed()


@pytest.mark.skipif(CV_BRIDGE is None, reason='cv_bridge (ROS 2) is not installed here; with it the node '
                                              'converts through cv_bridge, checked here against ours')
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'mono8', 'bayer_rggb8', 'bayer_grbg8', 'yuv422',
                                      'yuv422_yuy2', 'rgb16', 'mono16'])
def test_cv_bridge_and_our_conversion_agree(encoding):
    channels = CAMERA_ENCODINGS[encoding].channels
    dtype = CAMERA_ENCODINGS[encoding].dtype
    raw = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (8, 12, channels), dtype=dtype)
    msg = array_to_image_msg(raw.reshape(8, 12 * channels) if channels > 1 else raw[:, :, 0], encoding, Header())
    msg.width = 12
    ours = image_msg_to_rgb(msg)
    theirs = image_msg_to_rgb(msg, bridge=CV_BRIDGE)
    assert ours.shape == (8, 12, 3)
    np.testing.assert_allclose(theirs.astype(int), ours.astype(int), atol=1)


def test_conversion_benchmark_times_every_encoding():
    from seg_perception.tools.benchmarks.conversion import conversion_costs

    frame = np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    rows = conversion_costs(frame, repeats=1)
    assert [name for name, _ in rows] == list(CAMERA_ENCODINGS) + ['compressed jpg', 'compressed png']
    assert all(cost >= 0 for _, cost in rows)
