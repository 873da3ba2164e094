"""Labelled datasets on disk: camera images with semantic and instance ground truth.

One reader serves bag making (seg_bag make: samples in order) and training (seg-models train:
samples by index, ``Dataset.files`` and ``read_sample``). Layouts read:
* Cityscapes: ``<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png`` and ``*_gtFine_instanceIds.png`` (and
  ``<root>/camera/<split>/<city>/*_camera.json`` intrinsics where present). Semantic ground truth
  stays in Cityscapes' labelIds, as the official evaluation expects.
* Image + label folders (CamVid style): ``<root>/images/*`` and ``<root>/labels/*`` with the same
  file names, label values in a named label set (camvid, mapillary_vistas, ...), or Cityscapes
  labelIds (``cityscapes_label_ids``). Every label image is checked against that id space, so
  labels in another convention are refused instead of scoring 0%.
* CamVid as SegNet distributes it: ``<root>/<split>/*.png`` with ``<root>/<split>annot/*.png``
  (train, val, test), label values in the ``camvid`` label set.
* A video file: frames only, no ground truth (replay for latency and throughput).
* Moving shapes (``seg_models.data.moving_shapes``): a synthetic sequence whose instance ids name
  the same object in every frame, for tracking scores; bars are cars, the disc a person, the
  background road, all in Cityscapes labelIds and instance ids. Its source path is a background
  image file, or anything else (e.g. ``moving_shapes``) for seeded grey noise.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from seg_models.data.frame_sources import image_files, read_rgb, video_frames
from seg_models.data.labels import get_label_set

CITYSCAPES = 'cityscapes'
CITYSCAPES_LABEL_IDS = 'cityscapes_label_ids'  # the semantic ground truth's id space for Cityscapes
DATASET_KINDS = ('auto', 'cityscapes', 'folder', 'camvid', 'video', 'moving_shapes')
MOVING_SHAPES_FRAMES = 40  # frames of a moving_shapes bag unless --max-frames says otherwise
# Cityscapes labelIds of moving_shapes' classes (disc, bar) and of its background.
MOVING_SHAPES_LABEL_IDS = {'disc': 24, 'bar': 26}  # person, car
MOVING_SHAPES_BACKGROUND_LABEL_ID = 7  # road


@dataclass(frozen=True)
class GroundTruthInfo:
    """What the ground truth topics of a bag hold; stored in the bag as JSON (std_msgs/String)."""

    dataset: str  # cityscapes, folder or video
    label_set: str  # id space of the semantic ground truth: cityscapes_label_ids or a label-set name
    has_semantic: bool
    has_instances: bool  # Cityscapes-style instance ids: labelId * 1000 + index (or labelId for crowds)
    # An instance id names the same object in every frame (tracking can be scored); absent in older bags.
    instance_ids_persist: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> 'GroundTruthInfo':
        return GroundTruthInfo(**json.loads(text))


@dataclass
class Sample:
    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    semantic: Optional[np.ndarray] = None  # (H, W) uint8 ids in GroundTruthInfo.label_set
    instances: Optional[np.ndarray] = None  # (H, W) uint16 Cityscapes instance ids
    intrinsics: Optional[tuple[float, float, float, float]] = None  # fx, fy, cx, cy


@dataclass(frozen=True)
class SampleFiles:
    """Where one sample's image and ground truth are."""

    name: str
    image: Path
    semantic: Optional[Path] = None
    instances: Optional[Path] = None
    camera: Optional[Path] = None  # Cityscapes camera JSON (intrinsics)


@dataclass
class Dataset:
    info: GroundTruthInfo
    names: list[str]
    samples: Iterator[Sample]  # in order, read as they are taken
    files: list[SampleFiles] = field(default_factory=list)  # by index (empty for a video)


def _read_label(path: Path, dtype) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise ValueError(f'{path} is not a single-channel label image')
    return label.astype(dtype, copy=False)


def _cityscapes_intrinsics(path: Path) -> Optional[tuple[float, float, float, float]]:
    if not path.is_file():
        return None
    intrinsic = json.loads(path.read_text())['intrinsic']
    return intrinsic['fx'], intrinsic['fy'], intrinsic['u0'], intrinsic['v0']


def cityscapes_dataset(root: Path, split: str) -> Dataset:
    images = sorted((root / 'leftImg8bit' / split).glob('*/*_leftImg8bit.png'))
    if not images:
        raise FileNotFoundError(f'no {root}/leftImg8bit/{split}/<city>/*_leftImg8bit.png')
    stems = [path.name[:-len('_leftImg8bit.png')] for path in images]
    ground_truth = [root / 'gtFine' / split / path.parent.name / stem for path, stem in zip(images, stems)]
    missing = [str(gt) + '_gtFine_labelIds.png' for gt in ground_truth
               if not Path(str(gt) + '_gtFine_labelIds.png').is_file()]
    if missing:
        raise FileNotFoundError(f'{len(missing)} images have no gtFine labelIds file, e.g. {missing[0]}')
    has_instances = all(Path(str(gt) + '_gtFine_instanceIds.png').is_file() for gt in ground_truth)
    files = [SampleFiles(stem, image, Path(str(gt) + '_gtFine_labelIds.png'),
                         Path(str(gt) + '_gtFine_instanceIds.png') if has_instances else None,
                         root / 'camera' / split / image.parent.name / f'{stem}_camera.json')
             for image, stem, gt in zip(images, stems, ground_truth)]
    return _dataset(GroundTruthInfo(CITYSCAPES, CITYSCAPES_LABEL_IDS, True, has_instances), files)


def read_sample(files: SampleFiles, valid_label_ids: Optional[tuple[np.ndarray, str]] = None) -> Sample:
    """The sample at ``files``; semantic labels are checked against ``valid_label_ids`` (the values
    and their description, ``label_ids_of``) where given."""
    if files.semantic is None:
        semantic = None
    elif valid_label_ids is None:
        semantic = _read_label(files.semantic, np.uint8)
    else:
        semantic = checked_label(files.semantic, *valid_label_ids)
    return Sample(files.name, read_rgb(files.image), semantic,
                  _read_label(files.instances, np.uint16) if files.instances else None,
                  _cityscapes_intrinsics(files.camera) if files.camera else None)


def _dataset(info: GroundTruthInfo, files: list[SampleFiles],
             valid_label_ids: Optional[tuple[np.ndarray, str]] = None) -> Dataset:
    samples = (read_sample(sample_files, valid_label_ids) for sample_files in files)
    return Dataset(info, [sample_files.name for sample_files in files], samples, files)


def label_ids_of(id_space: str) -> tuple[np.ndarray, str]:
    """The values label images in ``id_space`` may hold (a label-set name, or Cityscapes labelIds),
    and how to name them in an error."""
    if id_space == CITYSCAPES_LABEL_IDS:
        from cityscapesscripts.helpers.labels import labels

        ids = sorted({label.id for label in labels if 0 <= label.id < 255})
        return np.array(ids + [255]), f'Cityscapes labelIds ({ids[0]}-{ids[-1]}, 255)'
    label_set = get_label_set(id_space)  # fails early, naming the known label sets
    return (np.array(sorted({label.id for label in label_set.classes} | {label_set.ignore_id})),
            f'label set {label_set.name} (ids 0-{label_set.num_classes - 1}, ignore {label_set.ignore_id})')


def checked_label(path: Path, valid: np.ndarray, description: str) -> np.ndarray:
    """The label image at ``path``, refused in one line when it holds ids outside ``valid``."""
    label = _read_label(path, np.uint8)
    values = np.unique(label)
    outside = values[~np.isin(values, valid)]
    if outside.size:
        hint = ('; Cityscapes labelIds? --label-set ' + CITYSCAPES_LABEL_IDS
                if description.startswith('label set') and values.max() <= 33 else '')
        raise ValueError(f'{path} holds ids {", ".join(map(str, outside[:8]))} that are not in {description}: '
                         f'declare the labels\' id space with --label-set{hint}')
    return label


def folder_dataset(root: Path, label_set: str) -> Dataset:
    images = image_files(root / 'images')
    if not images:
        raise FileNotFoundError(f'no images in {root}/images')
    return _paired_dataset('folder', images, root / 'labels', label_set)


def camvid_dataset(root: Path, split: str) -> Dataset:
    """CamVid in SegNet's layout: ``<split>/`` images, ``<split>annot/`` labels (camvid ids)."""
    images = image_files(root / split)
    if not images:
        raise FileNotFoundError(f'no images in {root}/{split} (CamVid layout: {split}/ and {split}annot/)')
    return _paired_dataset('camvid', images, root / f'{split}annot', 'camvid')


def _paired_dataset(kind: str, images: list[Path], label_folder: Path, label_set: str) -> Dataset:
    """Images with the label file of the same name in ``label_folder`` (none: no ground truth)."""
    labels = {path.stem: path for path in image_files(label_folder)} if label_folder.is_dir() else {}
    has_semantic = bool(labels)
    valid = None
    if has_semantic:
        missing = [path.name for path in images if path.stem not in labels]
        if missing:
            raise FileNotFoundError(f'{len(missing)} images have no label file in {label_folder}, e.g. {missing[0]}')
        valid = label_ids_of(label_set)
        checked_label(labels[images[0].stem], *valid)  # the usual mistake, before any bag is written
    files = [SampleFiles(path.stem, path, labels.get(path.stem)) for path in images]
    return _dataset(GroundTruthInfo(kind, label_set if has_semantic else '', has_semantic, False), files, valid)


def video_dataset(path: Path, max_frames: int = 0) -> Dataset:
    frames = list(video_frames(path))[:max_frames or None]
    samples = (Sample(frame.name, frame.rgb) for frame in frames)
    return Dataset(GroundTruthInfo('video', '', False, False), [frame.name for frame in frames], samples)


def moving_shapes_dataset(source: Path, max_frames: int = 0) -> Dataset:
    """``moving_shapes``' frames with Cityscapes labelIds and instance ids (labelId * 1000 + its
    object id, the same in every frame); ``source``: a background image file, else seeded noise."""
    from seg_models.data.moving_shapes import CLASS_NAMES, moving_shapes

    count = max_frames or MOVING_SHAPES_FRAMES
    class_label_ids = np.array([MOVING_SHAPES_LABEL_IDS[name] for name in CLASS_NAMES])

    def samples() -> Iterator[Sample]:
        for frame in moving_shapes(count, background=source if source.is_file() else None):
            semantic = np.full(frame.object_ids.shape, MOVING_SHAPES_BACKGROUND_LABEL_ID, np.uint8)
            instances = semantic.astype(np.uint16)
            for truth in frame.truths:
                visible = frame.object_ids == truth.object_id
                semantic[visible] = class_label_ids[truth.class_id]
                instances[visible] = class_label_ids[truth.class_id] * 1000 + truth.object_id
            yield Sample(f'shapes_{frame.index:06d}', frame.rgb, semantic, instances)

    info = GroundTruthInfo('moving_shapes', CITYSCAPES_LABEL_IDS, True, True, instance_ids_persist=True)
    return Dataset(info, [f'shapes_{index:06d}' for index in range(count)], samples())


def open_dataset(source: Path, kind: str = 'auto', split: str = 'val', label_set: str = 'camvid',
                 max_frames: int = 0) -> Dataset:
    """The dataset at ``source``; ``kind`` auto picks Cityscapes (leftImg8bit/), folder (images/),
    CamVid (``<split>annot/``) or video (a file)."""
    if kind == 'auto':
        if (source / 'leftImg8bit').is_dir():
            kind = 'cityscapes'
        elif (source / 'images').is_dir():
            kind = 'folder'
        elif (source / f'{split}annot').is_dir():
            kind = 'camvid'
        elif source.is_file():
            kind = 'video'
        else:
            raise FileNotFoundError(f'{source} is not a Cityscapes folder (leftImg8bit/), an image + label folder '
                                    f'(images/, labels/), a CamVid folder ({split}/, {split}annot/) or a video file')
    if kind == 'moving_shapes':
        return moving_shapes_dataset(source, max_frames)
    if kind == 'cityscapes':
        dataset = cityscapes_dataset(source, split)
    elif kind == 'folder':
        dataset = folder_dataset(source, label_set)
    elif kind == 'camvid':
        dataset = camvid_dataset(source, split)
    else:
        dataset = video_dataset(source, max_frames)
    if max_frames and kind != 'video':
        dataset.names, dataset.files = dataset.names[:max_frames], dataset.files[:max_frames]
        dataset.samples = (sample for _, sample in zip(range(max_frames), dataset.samples))
    return dataset
