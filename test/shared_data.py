"""Where the shared driving data lies (../shared/data beside the checkout, or
$SEG_PERCEPTION_SHARED_DATA, e.g. a copy carried to a GPU machine), and the driving frames the
tests feed their networks; ROS-free, so GPU-only test runs can import it."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get('SEG_PERCEPTION_SHARED_DATA') or REPO_ROOT.parent / 'shared' / 'data')
CAMVID_IMAGES = SHARED_DATA / 'camvid_seq05vd' / 'images'


def driving_frames(count: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """RGB CamVid frames (480x360) where ../shared is present, generated frames of that size otherwise;
    resized to ``size`` (height, width) when given."""
    from seg_models.data.frame_sources import synthetic_frames

    paths = sorted(CAMVID_IMAGES.glob('*.png'))[:count] if CAMVID_IMAGES.is_dir() else []
    if paths:
        frames = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in paths]
    else:
        frames = [frame.rgb for frame in synthetic_frames(count, width=480, height=360)]
    if size is not None:
        frames = [cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA) for frame in frames]
    return frames
