"""Small datasets written in their real layouts, for the tests of bags, evaluation and training."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_cityscapes_folder(root: Path, frames: int = 3) -> Path:
    """A small Cityscapes-layout dataset: road, building, sky; cars and people with instance ids."""
    rng = np.random.default_rng(0)
    folder_images, folder_gt = root / 'leftImg8bit' / 'val' / 'testcity', root / 'gtFine' / 'val' / 'testcity'
    folder_images.mkdir(parents=True)
    folder_gt.mkdir(parents=True)
    for index in range(frames):
        stem = f'testcity_000000_{index:06d}'
        label_ids = np.full((256, 512), 7, np.uint8)  # road
        label_ids[:90] = 23  # sky
        label_ids[90:130] = 11  # building
        instance_ids = label_ids.astype(np.uint16).copy()
        for number, (label_id, width, height) in enumerate([(26, 80, 40), (26, 60, 30), (24, 14, 40), (26, 40, 24)]):
            x, y = int(rng.integers(0, 512 - width)), int(rng.integers(130, 256 - height))
            label_ids[y:y + height, x:x + width] = label_id
            instance_ids[y:y + height, x:x + width] = label_id * 1000 + number
        rgb = np.stack([label_ids * 7, label_ids * 3, 255 - label_ids * 5], -1).astype(np.uint8)
        cv2.imwrite(str(folder_images / f'{stem}_leftImg8bit.png'), rgb)
        cv2.imwrite(str(folder_gt / f'{stem}_gtFine_labelIds.png'), label_ids)
        cv2.imwrite(str(folder_gt / f'{stem}_gtFine_instanceIds.png'), instance_ids)
    return root


def write_camvid_folder(root: Path, frames: int = 4) -> Path:
    """CamVid's SegNet layout (train/, trainannot/, val/, valannot/): sky, building, road, a car."""
    rng = np.random.default_rng(1)
    for split in ('train', 'val'):
        (root / split).mkdir(parents=True)
        (root / f'{split}annot').mkdir()
        for index in range(frames):
            labels = np.full((72, 96), 3, np.uint8)  # road
            labels[:20] = 0  # sky
            labels[20:36] = 1  # building
            x, y = int(rng.integers(0, 60)), int(rng.integers(40, 58))
            labels[y:y + 12, x:x + 30] = 8  # car
            labels[0, 0] = 11  # void
            rgb = np.stack([labels * 20, labels * 9, 250 - labels * 15], -1).astype(np.uint8)
            cv2.imwrite(str(root / split / f'f{index}.png'), rgb)
            cv2.imwrite(str(root / f'{split}annot' / f'f{index}.png'), labels)
    return root
