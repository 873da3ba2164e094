"""Label sets: which class id means what, its colour, and whether it is a countable "thing".

A model's label set travels with it (nodes publish it, evaluation checks it), so class tables are
taken from their official sources (cityscapesscripts) instead of being retyped here.
"""
from __future__ import annotations

from dataclasses import dataclass
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


def cityscapes_things() -> LabelSet:
    """Cityscapes' 8 instance classes (person ... bicycle) for instance segmentation, ids 0..7."""
    things = [label for label in _cityscapes_train_labels() if label.hasInstances]
    classes = tuple(
        LabelClass(id=index, name=label.name, color=tuple(label.color), is_thing=True)
        for index, label in enumerate(things)
    )
    return LabelSet(name='cityscapes_things', classes=classes, ignore_id=255)


LABEL_SETS: dict[str, Callable[[], LabelSet]] = {
    'cityscapes': cityscapes,
    'cityscapes_things': cityscapes_things,
}


def get_label_set(name: str) -> LabelSet:
    """The label set registered under ``name``; a clear error lists the known names."""
    try:
        factory = LABEL_SETS[name]
    except KeyError:
        raise ValueError(f'unknown label set {name!r}; known: {", ".join(sorted(LABEL_SETS))}') from None
    return factory()
