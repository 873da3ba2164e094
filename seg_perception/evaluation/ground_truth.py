"""Ground truth in the forms the nodes publish: for the perfect predictor, scoring and overlays."""
from __future__ import annotations

from typing import Optional

import numpy as np

from seg_models.data.labels import LabelSet, cityscapes, cityscapes_label_id_to_train_id, get_label_set
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult
from seg_models.data.datasets import CITYSCAPES_LABEL_IDS, GroundTruthInfo

INSTANCE_ID_FACTOR = 1000  # Cityscapes instance ids: labelId * 1000 + index; below 1000: no instance


def ground_truth_label_set(id_space: str) -> Optional[LabelSet]:
    """The label set whose class ids ``class_ids_of_ground_truth`` returns for ground truth in
    ``id_space`` (GroundTruthInfo.label_set): ``cityscapes`` for Cityscapes labelIds; None without labels."""
    if id_space == CITYSCAPES_LABEL_IDS:
        return cityscapes()
    return get_label_set(id_space) if id_space else None


def class_ids_of_ground_truth(ground_truth: np.ndarray, id_space: str) -> np.ndarray:
    """Semantic ground truth as the class ids of ``ground_truth_label_set(id_space)``, i.e. what a
    perfect node publishes: Cityscapes labelIds become trainIds, other label sets stay as they are."""
    if id_space == CITYSCAPES_LABEL_IDS:
        return cityscapes_label_id_to_train_id()[ground_truth]
    return ground_truth


def has_cityscapes_instances(info: GroundTruthInfo) -> bool:
    """Whether the instance ground truth is in Cityscapes' convention over Cityscapes labelIds (the
    official AP, panoptic ground truth and tracking read it): Cityscapes and moving_shapes bags."""
    return info.has_instances and info.label_set == CITYSCAPES_LABEL_IDS


def instances_of(instance_ids: np.ndarray, label_set: LabelSet, track_ids: bool = False) -> InstanceResult:
    """The instances of a Cityscapes instance-id image, score 1, as ``label_set`` classes (others
    are left out), highest area first; ``track_ids``: each carries its instance id as its track id
    (for ground truth whose ids persist across frames: a perfect tracker's answer)."""
    from cityscapesscripts.helpers.labels import id2label

    result = InstanceResult(image_size=instance_ids.shape[:2])
    for value in np.unique(instance_ids):
        if value < INSTANCE_ID_FACTOR:
            continue
        name = id2label[int(value) // INSTANCE_ID_FACTOR].name
        if name not in label_set.names:
            continue
        rows, columns = np.nonzero(instance_ids == value)
        x0, y0, x1, y1 = columns.min(), rows.min(), columns.max() + 1, rows.max() + 1
        mask = instance_ids[y0:y1, x0:x1] == value
        result.instances.append(Instance(class_id=label_set.names.index(name), class_name=name, score=1.0,
                                         box=(float(x0), float(y0), float(x1), float(y1)),
                                         roi=(int(x0), int(y0), int(x1 - x0), int(y1 - y0)), mask=mask,
                                         track_id=int(value) if track_ids else 0))
    result.instances.sort(key=lambda instance: -int(instance.mask.sum()))
    return result
