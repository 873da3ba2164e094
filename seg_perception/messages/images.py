"""Camera messages -> RGB arrays, and arrays -> the image messages this package publishes.

Every camera encoding a driving stack meets is converted here, in one tested module: rgb/bgr(a)
8 and 16 bit, mono 8/16, 8/16-bit Bayer (rggb, bggr, gbrg, grbg, demosaiced by OpenCV), YUV 4:2:2
(UYVY as ROS's ``yuv422``, and ``yuv422_yuy2``), and ``sensor_msgs/CompressedImage`` (JPEG, PNG).
Where ROS's ``cv_bridge`` is installed it does the pixel conversion; the checks before it are ours
either way, so a bad message is refused the same with or without it.

Bad input raises ``ImageConversionError`` with a message that names the problem, so a node can
log it (throttled), publish nothing for that frame and keep serving.
"""
from __future__ import annotations

import io
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np
import simplejpeg
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


class ImageConversionError(ValueError):
    """An image message that cannot be turned into an RGB array; ``kind`` names the problem class
    (for per-kind throttling and counters)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CameraEncoding:
    """How one ROS encoding lays out a pixel, and the OpenCV conversion that makes it RGB."""

    channels: int  # samples per pixel in the buffer (2 for YUV 4:2:2: one chroma + one luma byte)
    dtype: type  # sample type
    to_rgb: Optional[int]  # cv2 colour conversion code applied after narrowing to 8 bits; None: RGB already
    even_width: bool = False  # 4:2:2 chroma is shared by pixel pairs


def _camera_encodings() -> dict[str, CameraEncoding]:
    # OpenCV names Bayer patterns by the second row's second and third pixels, so ROS's rggb is
    # OpenCV's BG (the mapping cv_bridge uses, checked by the tests on pure-colour mosaics).
    bayer = {'rggb': cv2.COLOR_BayerBG2RGB, 'bggr': cv2.COLOR_BayerRG2RGB,
             'gbrg': cv2.COLOR_BayerGR2RGB, 'grbg': cv2.COLOR_BayerGB2RGB}
    colour = {'rgb': (3, None), 'bgr': (3, cv2.COLOR_BGR2RGB), 'rgba': (4, cv2.COLOR_RGBA2RGB),
              'bgra': (4, cv2.COLOR_BGRA2RGB), 'mono': (1, cv2.COLOR_GRAY2RGB)}
    encodings = {}
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        for name, (channels, code) in colour.items():
            encodings[f'{name}{bits}'] = CameraEncoding(channels, dtype, code)
        for pattern, code in bayer.items():
            encodings[f'bayer_{pattern}{bits}'] = CameraEncoding(1, dtype, code)
    encodings['yuv422'] = CameraEncoding(2, np.uint8, cv2.COLOR_YUV2RGB_UYVY, even_width=True)
    encodings['yuv422_yuy2'] = CameraEncoding(2, np.uint8, cv2.COLOR_YUV2RGB_YUY2, even_width=True)
    return encodings


CAMERA_ENCODINGS: dict[str, CameraEncoding] = _camera_encodings()

DEFAULT_MAX_PIXELS = 4096 * 4096  # 4K and 12-megapixel cameras fit; a decompression bomb does not

# Encodings of the images this package publishes: encoding -> (dtype, channels).
OUTPUT_ENCODINGS = {'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1), 'rgb8': (np.uint8, 3),
                    '32FC1': (np.float32, 1)}
CLASS_ID_ENCODINGS = {np.dtype(np.uint8): 'mono8', np.dtype(np.uint16): 'mono16'}


def cv_bridge_if_installed() -> Optional[Any]:
    """ROS's ``CvBridge`` where the cv_bridge package is installed, else None (our conversions)."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def check_header(header: Header) -> None:
    """Refuse a header the outputs cannot carry on: a stamp whose nanoseconds are not below one second.
    (Negative seconds are valid in builtin_interfaces/Time and are answered; they just give no latency.)"""
    if not 0 <= header.stamp.nanosec < 10**9:
        raise ImageConversionError('stamp', f'header stamp nanosec {header.stamp.nanosec} is not in [0, 1e9)')


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageConversionError('zero_size', f'zero-size image ({width}x{height})')
    if height * width > max_pixels:
        raise ImageConversionError(
            'too_large', f'image {width}x{height} has {height * width} pixels, above the limit of {max_pixels}')


def image_msg_pixels(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, CameraEncoding]:
    """The message's pixels as an array (H, W, channels) of its sample type, native byte order,
    after checking encoding, size, step and data length against each other."""
    encoding = CAMERA_ENCODINGS.get(msg.encoding)
    if encoding is None:
        raise ImageConversionError(
            'encoding', f'unsupported encoding {msg.encoding!r}; supported: {", ".join(sorted(CAMERA_ENCODINGS))}')
    height, width = msg.height, msg.width
    _check_size(width, height, max_pixels)
    if encoding.even_width and width % 2:
        raise ImageConversionError('odd_width', f'{msg.encoding} needs an even width, got {width}')
    row_bytes = width * encoding.channels * np.dtype(encoding.dtype).itemsize
    if msg.step < row_bytes:
        raise ImageConversionError(
            'step', f'step {msg.step} is below {row_bytes} bytes per row for {width} px {msg.encoding}')
    if len(msg.data) != msg.step * height:
        raise ImageConversionError(
            'data_length',
            f'data holds {len(msg.data)} bytes but step * height = {msg.step} * {height} = {msg.step * height}')
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, msg.step)[:, :row_bytes]
    dtype = np.dtype(encoding.dtype).newbyteorder('>' if msg.is_bigendian else '<')
    pixels = rows.view(dtype).reshape(height, width, encoding.channels)
    return pixels, encoding


def _to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """Samples narrowed to uint8: 16-bit data keeps its most significant byte, picked straight out
    of the buffer (no arithmetic), whichever the byte order."""
    if pixels.dtype.itemsize == 1:
        return pixels
    big_endian = pixels.dtype.byteorder == '>' or (pixels.dtype.byteorder == '=' and sys.byteorder == 'big')
    high_byte = 0 if big_endian else 1
    return np.ascontiguousarray(pixels.view(np.uint8)[..., high_byte::2])


def image_msg_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS, bridge: Optional[Any] = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of ``msg``; ``bridge`` (a CvBridge) converts where given."""
    pixels, encoding = image_msg_pixels(msg, max_pixels)
    if bridge is not None:
        return np.asarray(bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
    pixels = _to_8_bits(pixels)
    if encoding.to_rgb is None:
        return pixels
    if encoding.channels == 1:
        pixels = pixels[:, :, 0]
    try:
        return cv2.cvtColor(pixels, encoding.to_rgb)
    except cv2.error as error:  # e.g. a Bayer image too small to demosaic
        raise ImageConversionError('conversion', f'cannot convert {msg.encoding} {msg.width}x{msg.height}: '
                                                 f'{str(error).strip().splitlines()[-1]}') from None


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# Our own size check (max_image_pixels) runs on the header before Pillow decodes anything, so
# Pillow's decompression-bomb limit, with its own numbers, is not the one a user meets.
PILImage.MAX_IMAGE_PIXELS = None
PNG_END = b'\x00\x00\x00\x00IEND\xaeB`\x82'  # the IEND chunk (empty, constant CRC) every PNG ends with
JPEG_SIGNATURE = b'\xff\xd8'
COMPRESSED_FORMATS = 'JPEG or 8/16-bit PNG'
PNG_16_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I')  # Pillow's modes of a 16-bit grey PNG


def _decoder_words(error: Exception) -> str:
    """A decoder's message without its internals: libjpeg-turbo's function names
    ('tjDecompressHeader3(): ...') and Python object reprs ('<_io.BytesIO object at 0x...>')."""
    text = re.sub(r'\btj\w+\(\):\s*', '', str(error))
    return re.sub(r'<[\w.]+ object at 0x[0-9a-f]+>', 'the data', text).strip() or type(error).__name__


def _png_header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk that every PNG starts with, read before any decoding."""
    if len(data) < 24 or data[12:16] != b'IHDR':
        raise ImageConversionError('undecodable', 'PNG without its IHDR header chunk')
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def _decode_jpeg(data: bytes, max_pixels: int, described: str) -> np.ndarray:
    """libjpeg-turbo through simplejpeg, strict: a warning (data ending before the image does, which
    OpenCV answers with grey-filled rows and a line on stderr) refuses the frame."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        raise ImageConversionError('undecodable', f'{described} cannot be decoded: {_decoder_words(error)}') from None
    _check_size(width, height, max_pixels)
    try:
        return simplejpeg.decode_jpeg(data, colorspace='RGB', strict=True)
    except ValueError as error:
        raise ImageConversionError('undecodable', f'{described} is a corrupt JPEG: {_decoder_words(error)}') from None


def _decode_png(data: bytes, max_pixels: int, described: str) -> np.ndarray:
    """Pillow: it raises on truncated or corrupt data instead of printing libpng's lines on stderr;
    a file cut after its last pixel data (no IEND chunk) is refused too, though Pillow decodes it.
    16-bit samples keep their most significant byte."""
    _check_size(*_png_header_size(data), max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the frame is decoded or refused; Pillow's warnings add nothing
        try:
            image = PILImage.open(io.BytesIO(data), formats=['PNG'])  # reads the header only
        except Exception as error:  # noqa: BLE001 - Pillow raises many types for garbage
            raise ImageConversionError('undecodable', f'{described} cannot be decoded: {_decoder_words(error)}') \
                from None
        with image:
            _check_size(image.width, image.height, max_pixels)
            if PNG_END not in data:
                raise ImageConversionError('undecodable', f'{described} is a corrupt PNG: truncated, no IEND chunk')
            try:
                image.load()
                if image.mode in PNG_16_BIT_MODES:
                    return cv2.cvtColor((np.asarray(image) >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
                return np.asarray(image if image.mode == 'RGB' else image.convert('RGB'))
            except Exception as error:  # noqa: BLE001 - truncated or corrupt data, in many types
                raise ImageConversionError('undecodable', f'{described} is a corrupt PNG: {_decoder_words(error)}') \
                    from None


def compressed_msg_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array of a JPEG or PNG ``CompressedImage`` (told apart by their signatures; other
    formats are refused). The size is read from the file header and checked before anything is
    decompressed; the decoders are strict, so corrupt data is refused, never answered. cv_bridge is
    not used here: it decodes with OpenCV, which accepts any format and fills missing data with grey."""
    data = bytes(msg.data)
    described = f'compressed image (format {msg.format!r}, {len(data)} bytes)'
    if not data:
        raise ImageConversionError('zero_size', 'compressed image with no data')
    if data.startswith(JPEG_SIGNATURE):
        rgb = _decode_jpeg(data, max_pixels, described)
    elif data.startswith(PNG_SIGNATURE):
        rgb = _decode_png(data, max_pixels, described)
    else:
        raise ImageConversionError('format', f'{described} is neither JPEG nor PNG (starts with {data[:8]!r}); '
                                             f'accepted: {COMPRESSED_FORMATS}')
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError('undecodable', f'{described} decoded to {rgb.dtype} {rgb.shape}, not RGB')
    return rgb


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Image message holding ``array`` (H, W) or (H, W, C), rows packed, with ``header`` copied."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


def rgb_to_camera_msg(rgb: np.ndarray, header: Header, compression: str = 'none') -> Image | CompressedImage:
    """An RGB frame as a camera driver publishes it: an rgb8 Image (``none``), or a CompressedImage
    (``jpeg``, ``png``) in image_transport's compressed format."""
    if compression == 'none':
        return array_to_image_msg(rgb, 'rgb8', header)
    ok, encoded = cv2.imencode('.jpg' if compression == 'jpeg' else '.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'cannot encode a {rgb.shape[1]}x{rgb.shape[0]} frame as {compression}')
    return CompressedImage(header=header, format=f'rgb8; {compression} compressed bgr8', data=encoded.tobytes())


def class_ids_to_image_msg(class_ids: np.ndarray, header: Header) -> Image:
    """mono8 (uint8 ids) or mono16 (uint16 ids) class-id image."""
    if class_ids.ndim != 2 or class_ids.dtype not in CLASS_ID_ENCODINGS:
        raise ValueError(f'class ids must be a 2-D uint8 or uint16 array, got {class_ids.dtype} {class_ids.shape}')
    return array_to_image_msg(class_ids, CLASS_ID_ENCODINGS[class_ids.dtype], header)


def output_msg_to_array(msg: Image) -> np.ndarray:
    """Array of an output image this package publishes (mono8/mono16 class ids, rgb8 views):
    (H, W) for mono, (H, W, 3) for rgb8. For consumers and tools."""
    if msg.encoding not in OUTPUT_ENCODINGS:
        raise ImageConversionError('encoding', f'not an output encoding: {msg.encoding!r}')
    dtype, channels = OUTPUT_ENCODINGS[msg.encoding]
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, :msg.width * channels * np.dtype(dtype).itemsize].view(dtype)
    return pixels.reshape(msg.height, msg.width) if channels == 1 else pixels.reshape(msg.height, msg.width, 3)


def confidence_to_image_msg(confidence: np.ndarray, encoding: str, header: Header) -> Image:
    """Per-pixel confidence in 0..1 as mono8 (0-255, compact) or 32FC1 (exact)."""
    if encoding == 'mono8':
        return array_to_image_msg(np.rint(np.clip(confidence, 0.0, 1.0) * 255).astype(np.uint8), 'mono8', header)
    if encoding == '32FC1':
        return array_to_image_msg(confidence.astype(np.float32, copy=False), '32FC1', header)
    raise ValueError(f'confidence encoding must be mono8 or 32FC1, got {encoding!r}')
