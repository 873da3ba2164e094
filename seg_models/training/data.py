"""Training samples from the dataset layouts seg_bag make reads (seg_models.data.datasets).

Ground truth becomes what the network is trained on: semantic ids of the model's label set (0..C-1,
``IGNORE`` elsewhere; Cityscapes labelIds through their trainIds) and, for instances, one mask, box
and network class per object: from Cityscapes instanceIds, or, for folder and CamVid data, from the
connected components of the label set's thing classes (as for the evaluation's ground truth).
Every label image is checked against its
declared id space on reading: a file with foreign ids is refused in one line naming it and the ids.

Which sample is drawn where is fixed by the run's seed and the position in the run
(``RunOrder``): a resumed run, a one-process run and a distributed run draw the same samples with
the same augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from seg_models.data.datasets import CITYSCAPES_LABEL_IDS, SampleFiles, label_ids_of, open_dataset, read_sample
from seg_models.data.labels import LabelSet, cityscapes_label_id_to_train_id, get_label_set
from seg_models.training.augment import IGNORE, augment_instances, augment_semantic, sample_seed

MIN_INSTANCE_PIXELS = 40  # connected components smaller than this are not instances (label noise)


class TrainingDataError(ValueError):
    """A dataset that cannot be trained on: the message names the file and what is wrong."""


@dataclass(frozen=True)
class SplitData:
    """The files of one split and how their labels map onto the model's classes."""

    files: list[SampleFiles]
    id_space: str  # cityscapes_label_ids or a label-set name
    to_target: np.ndarray  # (256,) uint8: label value -> training id (IGNORE: no loss)

    @property
    def valid_ids(self) -> tuple[np.ndarray, str]:
        return label_ids_of(self.id_space)


def open_split(source: Path, split: str, label_set: LabelSet, dataset_label_set: str = '') -> SplitData:
    """The split ``split`` of the dataset at ``source`` (Cityscapes root, images/ + labels/ folder,
    or CamVid's layout), its labels mapped onto ``label_set``."""
    try:
        dataset = open_dataset(Path(source), split=split, label_set=dataset_label_set or label_set.name)
    except (FileNotFoundError, ValueError) as error:
        raise TrainingDataError(f'{split} split of {source}: {error}') from None
    if not dataset.files:
        raise TrainingDataError(f'the {split} split of {source} has no labelled images')
    if not dataset.info.has_semantic:
        raise TrainingDataError(f'the {split} split of {source} has no labels (images only)')
    return SplitData(dataset.files, dataset.info.label_set, target_lookup(dataset.info.label_set, label_set))


def describe(source: Path, split: str, label_set: str) -> tuple[str, tuple[int, int]]:
    """(the id space of the labels, the first image's (height, width)) of a split, before the
    model's classes are known."""
    try:
        dataset = open_dataset(Path(source), split=split, label_set=label_set)
    except (FileNotFoundError, ValueError) as error:
        raise TrainingDataError(f'{split} split of {source}: {error}') from None
    if not dataset.files:
        raise TrainingDataError(f'the {split} split of {source} has no images')
    height, width = read_sample(dataset.files[0]).rgb.shape[:2]
    return dataset.info.label_set, (height, width)


def target_lookup(id_space: str, label_set: LabelSet) -> np.ndarray:
    """(256,) table from label values in ``id_space`` to ``label_set``'s training ids."""
    if id_space == CITYSCAPES_LABEL_IDS:
        if label_set.name != 'cityscapes':
            raise TrainingDataError(f'Cityscapes labels train the cityscapes label set, not {label_set.name}')
        return cityscapes_label_id_to_train_id()
    source = get_label_set(id_space)
    table = np.full(256, IGNORE, np.uint8)
    ids = {label.name: label.id for label in label_set.classes}
    for label in source.classes:
        if label.name in ids:
            table[label.id] = ids[label.name]
    if (table == IGNORE).all():
        raise TrainingDataError(f'no class of the labels ({id_space}) is in the label set {label_set.name}')
    return table


def read_target(split: SplitData, files: SampleFiles) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(RGB image, training-id target, Cityscapes instance ids or None) of one sample, checked."""
    try:
        sample = read_sample(files, split.valid_ids)
    except ValueError as error:
        raise TrainingDataError(str(error)) from None
    if sample.rgb.shape[:2] != sample.semantic.shape:
        raise TrainingDataError(f'{files.image} is {sample.rgb.shape[1]}x{sample.rgb.shape[0]} but its label '
                                f'{files.semantic} is {sample.semantic.shape[1]}x{sample.semantic.shape[0]}')
    return sample.rgb, split.to_target[sample.semantic], sample.instances


class RunOrder(Sampler):
    """The samples of a run in order, as (dataset index, augmentation seed), for one process of
    ``world_size``: position p of the run is sample ``permutation(epoch)[p % n]``; each global batch
    of ``global_batch`` positions is split into ``world_size`` consecutive shards. Starting at an
    iteration continues exactly where a run stopped."""

    def __init__(self, size: int, global_batch: int, seed: int, start_iteration: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ValueError(f'the batch {global_batch} does not split over {world_size} processes')
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.start_iteration, self.rank, self.world_size = start_iteration, rank, world_size

    def positions(self, iteration: int) -> range:
        """The run positions this process draws at ``iteration``."""
        shard = self.global_batch // self.world_size
        start = iteration * self.global_batch + self.rank * shard
        return range(start, start + shard)

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        return int(np.random.default_rng([self.seed, epoch]).permutation(self.size)[offset])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        iteration = self.start_iteration
        while True:
            for position in self.positions(iteration):
                yield self.index(position), sample_seed(self.seed, position)
            iteration += 1



class SemanticTrainingSet(Dataset):
    def __init__(self, split: SplitData, pipeline) -> None:
        self.split, self.pipeline = split, pipeline

    def __len__(self) -> int:
        return len(self.split.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        rgb, target, _ = read_target(self.split, self.split.files[index])
        return augment_semantic(self.pipeline, rgb, target, seed)


def instances_from_cityscapes(instance_ids: np.ndarray, to_target: np.ndarray, thing_ids: set[int]
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, training ids, masks) of the objects in a Cityscapes instanceIds image (id =
    labelId * 1000 + index; crowds, id < 1000, are not objects)."""
    boxes, labels, masks = [], [], []
    for value in np.unique(instance_ids[instance_ids >= 1000]):
        train_id = int(to_target[value // 1000])
        if train_id in thing_ids:
            _append_object(instance_ids == value, train_id, boxes, labels, masks)
    return _as_arrays(boxes, labels, masks, instance_ids.shape)


def instances_from_components(target: np.ndarray, thing_ids: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, training ids, masks): each connected component of a thing class's pixels is an object."""
    boxes, labels, masks = [], [], []
    for train_id in sorted(thing_ids):
        count, components = cv2.connectedComponents((target == train_id).astype(np.uint8))
        for component in range(1, count):
            mask = components == component
            if mask.sum() >= MIN_INSTANCE_PIXELS:
                _append_object(mask, train_id, boxes, labels, masks)
    return _as_arrays(boxes, labels, masks, target.shape)


def _append_object(mask: np.ndarray, train_id: int, boxes: list, labels: list, masks: list) -> None:
    rows, columns = np.nonzero(mask)
    boxes.append([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1])
    labels.append(train_id)
    masks.append(mask)


def _as_arrays(boxes: list, labels: list, masks: list, shape: tuple[int, int]):
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
            np.stack(masks) if masks else np.zeros((0, *shape), bool))


def network_classes_of_things(split_label_set: LabelSet, network_classes: list[str]) -> dict[int, int]:
    """Training id of each thing class of ``split_label_set`` -> its index among the network's classes
    (matched by name; e.g. cityscapes 'car' -> cityscapes_things' network index of 'car')."""
    indices = {name: index for index, name in enumerate(network_classes)}
    found = {label.id: indices[label.name] for label in split_label_set.classes
             if label.is_thing and label.name in indices}
    if not found:
        raise TrainingDataError(f'no thing class of {split_label_set.name} is among the network\'s classes')
    return found


class InstanceTrainingSet(Dataset):
    """Mask R-CNN samples: (float image, target with boxes, network class indices, masks)."""

    def __init__(self, split: SplitData, pipeline, network_class_of: dict[int, int]) -> None:
        self.split, self.pipeline, self.network_class_of = split, pipeline, network_class_of

    def __len__(self) -> int:
        return len(self.split.files)

    def objects(self, index: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The RGB image and its objects (boxes, network classes, masks) of sample ``index``."""
        rgb, target, instance_ids = read_target(self.split, self.split.files[index])
        things = set(self.network_class_of)
        if instance_ids is not None:
            boxes, ids, masks = instances_from_cityscapes(instance_ids, self.split.to_target, things)
        else:
            boxes, ids, masks = instances_from_components(target, things)
        classes = np.array([self.network_class_of[int(i)] for i in ids], np.int64)
        return rgb, (boxes, classes, masks)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, seed = item
        rgb, (boxes, classes, masks) = self.objects(index)
        return augment_instances(self.pipeline, rgb, boxes, classes, masks, seed)
