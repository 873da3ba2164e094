"""Folders of image files (camera frames, calibration sets): which files count, read as RGB."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def image_files(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` in name order (so runs and calibrations are reproducible)."""
    return sorted(path for path in Path(folder).iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a file OpenCV cannot decode is a ValueError naming it."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot decode image {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
