"""Where camera images come from when no camera is there: image folders, videos, generated scenes.

One home for reading images from disk: folders of image files (frames, calibration sets, dataset
labels), video files, and deterministic generated driving-like frames for machines without data.
No ROS here: the image source node, the runner, benchmarks, bag making and calibration use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

SYNTHETIC = 'synthetic'
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


@dataclass
class Frame:
    name: str  # stem used for output file names, e.g. "Seq05VD_f00030" or "frame_000012"
    rgb: np.ndarray  # (H, W, 3) uint8


def folder_frames(folder: Path) -> Iterator[Frame]:
    """The folder's images in name order; a folder without images is refused here, not at its first frame."""
    paths = image_files(folder)
    if not paths:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {folder}')
    return (Frame(path.stem, read_rgb(path)) for path in paths)


def video_frames(path: Path) -> Iterator[Frame]:
    """The video's frames; a file OpenCV cannot open is refused here, not at its first frame."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f'cannot open video {path}')
    return _decoded(capture, path)


def _decoded(capture: cv2.VideoCapture, path: Path) -> Iterator[Frame]:
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(f'frame_{index:06d}', cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError(f'video {path} has no readable frames')


def synthetic_frames(count: int, width: int = 640, height: int = 360) -> Iterator[Frame]:
    """Road, sky, buildings and cars that drive across: deterministic, for machines without data."""
    for index in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        horizon = height * 2 // 5
        frame[:horizon] = np.linspace((110, 160, 230), (190, 215, 240), horizon)[:, None, :].astype(np.uint8)
        frame[horizon:] = (95, 95, 100)
        for left in range(0, width, width // 6):
            top = horizon - (40 + (left * 7919) % 60) * height // 360
            cv2.rectangle(frame, (left + 4, top), (left + width // 8, horizon), (150, 120, 100), -1)
        cv2.line(frame, (width // 2, horizon), (width // 2, height), (240, 240, 240), max(2, width // 200))
        for lane, speed in ((0.3, 7), (0.7, -5)):
            x = int((index * speed * width / 200 + lane * width) % width)
            y = int(horizon + (height - horizon) * lane)
            cv2.rectangle(frame, (x, y - height // 12), (x + width // 8, y + height // 24), (30, 60, 170), -1)
        yield Frame(f'frame_{index:06d}', frame)


def open_frames(source: str, max_frames: int = 0) -> Iterator[Frame]:
    """Frames of ``source``: a folder of images, a video file, or "synthetic" (``max_frames`` or 30).
    A source that is none of these is refused here, before anything waits on its frames."""
    if source == SYNTHETIC:
        frames = synthetic_frames(max_frames or 30)
    else:
        path = Path(source)
        if path.is_dir():
            frames = folder_frames(path)
        elif path.is_file():
            frames = video_frames(path)
        else:
            raise FileNotFoundError(f'frame source {source!r} is neither a folder, a video file nor "synthetic"')
    return _at_most(frames, max_frames)


def _at_most(frames: Iterator[Frame], max_frames: int) -> Iterator[Frame]:
    """The first ``max_frames`` of ``frames`` (all of them at 0)."""
    for count, frame in enumerate(frames, start=1):
        yield frame
        if count == max_frames:
            return
