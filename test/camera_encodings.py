"""Test-side camera: RGB frames encoded the way real drivers send them, written independently of
seg_perception.messages.images (Bayer mosaics, BT.601 YUV 4:2:2 packing, 16-bit samples)."""
from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.messages.images import array_to_image_msg

COLOUR_CONVERSIONS = {'rgb': None, 'bgr': cv2.COLOR_RGB2BGR, 'rgba': cv2.COLOR_RGB2RGBA,
                      'bgra': cv2.COLOR_RGB2BGRA, 'mono': cv2.COLOR_RGB2GRAY}
YUV422_ORDERS = {'yuv422': ('U', 'Y0', 'V', 'Y1'), 'yuv422_yuy2': ('Y0', 'U', 'Y1', 'V')}
ALL_ENCODINGS = ([f'{name}{bits}' for bits in (8, 16) for name in COLOUR_CONVERSIONS]
                 + [f'bayer_{pattern}{bits}' for bits in (8, 16) for pattern in ('rggb', 'bggr', 'gbrg', 'grbg')]
                 + list(YUV422_ORDERS))


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer sensor's raw image of ``rgb``: each pixel keeps the one colour its filter passes."""
    channel = {'r': 0, 'g': 1, 'b': 2}
    raw = np.zeros(rgb.shape[:2], rgb.dtype)
    for letter, (dy, dx) in zip(pattern, [(0, 0), (0, 1), (1, 0), (1, 1)]):
        raw[dy::2, dx::2] = rgb[dy::2, dx::2, channel[letter]]
    return raw


def bt601_yuv(rgb: np.ndarray) -> np.ndarray:
    """Y, U, V planes (video range) of ``rgb``, written from the BT.601 equations, not OpenCV."""
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return np.clip(np.round(np.stack([y, u, v], -1)), 0, 255).astype(np.uint8)


def pack_yuv422(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, 2) packed 4:2:2 samples; each pixel pair gets the first pixel's chroma."""
    yuv = bt601_yuv(rgb)
    first, second = yuv[:, 0::2], yuv[:, 1::2]
    samples = {'Y0': first[..., 0], 'Y1': second[..., 0], 'U': first[..., 1], 'V': first[..., 2]}
    return np.stack([samples[name] for name in YUV422_ORDERS[encoding]], -1).reshape(rgb.shape[0], -1, 2)


def encoded_pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The array a camera driver would send ``rgb`` as, in ``encoding``."""
    if encoding in YUV422_ORDERS:
        return pack_yuv422(rgb, encoding)
    wide = encoding.endswith('16')
    base = encoding[:-2] if wide else encoding[:-1]
    samples = rgb.astype(np.uint16) * 257 if wide else rgb
    if base.startswith('bayer_'):
        return mosaic(samples, base[len('bayer_'):])
    conversion = COLOUR_CONVERSIONS[base]
    return samples if conversion is None else cv2.cvtColor(samples, conversion)


def encode_image_msg(rgb: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    return array_to_image_msg(encoded_pixels(rgb, encoding), encoding, header or Header())
