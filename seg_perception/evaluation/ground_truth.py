"""Ground truth in the forms the nodes publish: for the perfect-predictor check and for overlays."""
from __future__ import annotations

import numpy as np

from seg_models.instance_postprocess import Instance, InstanceResult
from seg_models.labels import LabelSet, cityscapes_label_id_to_train_id

INSTANCE_ID_FACTOR = 1000  # Cityscapes instance ids: labelId * 1000 + index; below 1000: no instance


def semantic_prediction_of(ground_truth: np.ndarray, ground_truth_label_set: str) -> np.ndarray:
    """The class-id image a perfect semantic node would publish: Cityscapes labelIds become trainIds,
    other label sets stay as they are."""
    if ground_truth_label_set == 'cityscapes_label_ids':
        return cityscapes_label_id_to_train_id()[ground_truth]
    return ground_truth


def instances_of(instance_ids: np.ndarray, label_set: LabelSet) -> InstanceResult:
    """The instances of a Cityscapes instance-id image, score 1, as ``label_set`` classes (others
    are left out), highest area first."""
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
                                         roi=(int(x0), int(y0), int(x1 - x0), int(y1 - y0)), mask=mask))
    result.instances.sort(key=lambda instance: -int(instance.mask.sum()))
    return result
