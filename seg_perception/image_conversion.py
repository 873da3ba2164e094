"""sensor_msgs/Image <-> numpy, with every check a camera driver's mistake can need.

Bad input raises ``ImageConversionError`` with a message that names the problem, so a node can
log it (throttled), publish nothing for that frame and keep serving.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header


class ImageConversionError(ValueError):
    """An image message that cannot be turned into an RGB array; ``kind`` names the problem class
    (for per-kind throttling and counters)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class _Encoding:
    channels: int
    dtype: type
    to_rgb: int | None  # cv2 colour conversion code; None when already RGB


ENCODINGS: dict[str, _Encoding] = {
    'rgb8': _Encoding(3, np.uint8, None),
    'bgr8': _Encoding(3, np.uint8, cv2.COLOR_BGR2RGB),
    'rgba8': _Encoding(4, np.uint8, cv2.COLOR_RGBA2RGB),
    'bgra8': _Encoding(4, np.uint8, cv2.COLOR_BGRA2RGB),
    'mono8': _Encoding(1, np.uint8, cv2.COLOR_GRAY2RGB),
}

DEFAULT_MAX_PIXELS = 8192 * 8192

# Encodings of the images this package publishes: encoding -> (dtype, channels).
OUTPUT_ENCODINGS = {'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1), 'rgb8': (np.uint8, 3)}
CLASS_ID_ENCODINGS = {np.dtype(dtype): encoding for encoding, (dtype, channels) in OUTPUT_ENCODINGS.items()
                      if channels == 1}


def image_msg_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of ``msg``, checked against its declared size, step and encoding."""
    encoding = ENCODINGS.get(msg.encoding)
    if encoding is None:
        raise ImageConversionError(
            'encoding', f'unsupported encoding {msg.encoding!r}; supported: {", ".join(sorted(ENCODINGS))}')
    height, width = msg.height, msg.width
    if height == 0 or width == 0:
        raise ImageConversionError('zero_size', f'zero-size image ({width}x{height})')
    if height * width > max_pixels:
        raise ImageConversionError(
            'too_large', f'image {width}x{height} has {height * width} pixels, above the limit of {max_pixels}')
    row_bytes = width * encoding.channels * np.dtype(encoding.dtype).itemsize
    if msg.step < row_bytes:
        raise ImageConversionError('step', f'step {msg.step} is below {row_bytes} bytes per row for {width} px {msg.encoding}')
    if len(msg.data) != msg.step * height:
        raise ImageConversionError(
            'data_length', f'data holds {len(msg.data)} bytes but step * height = {msg.step} * {height} = {msg.step * height}')
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, msg.step)[:, :row_bytes]
    pixels = rows.view(encoding.dtype).reshape(height, width, encoding.channels)
    if encoding.to_rgb is None:
        return pixels
    return cv2.cvtColor(pixels, encoding.to_rgb)


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
