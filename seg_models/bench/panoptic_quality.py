"""Panoptic quality (PQ, SQ, RQ) with Cityscapes' official panoptic evaluation (cityscapesscripts'
evalPanopticSemanticLabeling), frame by frame, mergeable over fleets.

Ground truth is made from a frame's semantic and instance ground truth the way cityscapesscripts'
createPanopticImgs makes it from gtFine instanceIds: one segment per stuff class, one per object
of a thing class, and a thing class's pixels outside every object (Cityscapes' group labels) one
crowd segment per class; ignored classes are void. The official matching (IoU above 0.5, void and
crowd pixels left out of a prediction's false positives) runs on the frame's PNGs as it reads them,
and gives its ``PQStat`` per class: true positives, their IoU sum, false positives and negatives.
Those are sums, so the statistics of several bags add up to those of one evaluation over all their
frames (``merge``), as the AP of a fleet pools its bags' matches.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from seg_models.data.labels import LabelSet
from seg_models.panoptic.fusion import PanopticResult
from seg_models.training.data import instances_from_components

if TYPE_CHECKING:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import PQStat

#: Instance ground truth in Cityscapes' convention: ids from this up are objects (labelId * 1000 +
#: index); smaller values are a class's pixels outside every object (stuff, or a crowd of things).
FIRST_OBJECT_ID = 1000


@dataclass
class GroundTruthSegment:
    """One segment of panoptic ground truth (a COCO panoptic ``segments_info`` entry)."""

    id: int
    class_id: int  # in the label set
    is_crowd: bool
    area: int


@dataclass
class PanopticGroundTruth:
    """One frame's panoptic ground truth: every pixel's segment (0: void) and the segments."""

    segment_ids: np.ndarray  # (H, W) int32
    segments: list[GroundTruthSegment] = field(default_factory=list)


def panoptic_ground_truth(semantic_ids: np.ndarray, instance_ids: Optional[np.ndarray],
                          label_set: LabelSet) -> PanopticGroundTruth:
    """Panoptic ground truth of a frame from its semantic ground truth (H, W) in ``label_set`` (ids
    outside its classes are void; convert Cityscapes labelIds with ``cityscapes_label_id_to_train_id``
    first) and its instance ground truth (H, W) in Cityscapes' instanceIds convention (ids of
    ``FIRST_OBJECT_ID`` and up are objects), or None (every thing pixel a crowd; see
    ``component_instance_ids``). An object's class is its pixels' semantic class."""
    num_classes = label_set.num_classes
    classes = semantic_ids.astype(np.int64)
    valid = classes < num_classes
    is_thing = np.array([label.is_thing for label in label_set.classes] + [False])
    if instance_ids is None:
        objects = np.zeros(semantic_ids.shape, bool)
    else:
        if instance_ids.shape != semantic_ids.shape:
            raise ValueError(f'instance ground truth {instance_ids.shape} and semantic ground truth '
                             f'{semantic_ids.shape} differ in size')
        objects = valid & is_thing[np.minimum(classes, num_classes)] & (instance_ids >= FIRST_OBJECT_ID)
    # Segment key of each pixel: its class for stuff and crowds, num_classes + rank of its (object id,
    # class) for objects, and past those for void; one histogram gives every segment's area.
    object_keys, object_key_of_pixel = np.unique(
        instance_ids[objects].astype(np.int64) * (num_classes + 1) + classes[objects] if objects.any() else
        np.zeros(0, np.int64), return_inverse=True)
    void_key = num_classes + object_keys.size
    keys = np.where(valid, classes, void_key)
    keys[objects] = num_classes + object_key_of_pixel.ravel()
    areas = np.bincount(keys.ravel(), minlength=void_key + 1)[:void_key]
    present = np.flatnonzero(areas)
    segment_of_key = np.zeros(void_key + 1, np.int32)
    segment_of_key[present] = np.arange(1, present.size + 1)
    key_classes = np.concatenate([np.arange(num_classes), object_keys % (num_classes + 1)])
    segments = [GroundTruthSegment(int(segment_of_key[key]), int(key_classes[key]),
                                   bool(key < num_classes and is_thing[key]), int(areas[key]))
                for key in present.tolist()]
    return PanopticGroundTruth(segment_of_key[keys], segments)


def component_instance_ids(semantic_ids: np.ndarray, label_set: LabelSet) -> np.ndarray:
    """Instance ground truth (H, W) uint16 in Cityscapes' convention for data sets without any
    (CamVid): each connected component of a thing class is an object, as training makes them
    (``instances_from_components``); components too small for training stay crowds."""
    thing_ids = {label.id for label in label_set.classes if label.is_thing}
    _, _, masks = instances_from_components(semantic_ids, thing_ids)
    instance_ids = np.zeros(semantic_ids.shape, np.uint16)
    for index, mask in enumerate(masks):
        instance_ids[mask] = FIRST_OBJECT_ID + index
    return instance_ids


def _official():
    import cityscapesscripts.evaluation.evalPanopticSemanticLabeling as official

    return official


def _categories(label_set: LabelSet) -> dict[int, dict]:
    """The official evaluation's category table (``categories`` of the ground-truth JSON)."""
    return {label.id: {'id': label.id, 'name': label.name, 'isthing': int(label.is_thing)}
            for label in label_set.classes}


def _write_segment_png(path: Path, segment_ids: np.ndarray) -> None:
    """Segment ids as COCO panoptic PNG colours (id = R + 256 G + 256^2 B), quickly compressed."""
    ids = segment_ids.astype(np.uint32)
    rgb = np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path, compress_level=1)


def statistics(frames: Sequence[tuple[PanopticGroundTruth, PanopticResult]], label_set: LabelSet) -> PQStat:
    """The official evaluation's match statistics (``PQStat``) of ``frames`` (ground truth and
    prediction, both in ``label_set``), written where it reads them and evaluated in one call."""
    official = _official()
    categories = _categories(label_set)
    pairs = []
    with tempfile.TemporaryDirectory(prefix='panoptic_quality_') as folder:
        gt_folder, prediction_folder = Path(folder) / 'gt', Path(folder) / 'pred'
        gt_folder.mkdir()
        prediction_folder.mkdir()
        for index, (ground_truth, prediction) in enumerate(frames):
            if ground_truth.segment_ids.shape != prediction.segment_ids.shape:
                raise ValueError(f'frame {index}: prediction {prediction.segment_ids.shape} and ground truth '
                                 f'{ground_truth.segment_ids.shape} differ in size')
            file_name = f'{index:06d}.png'
            _write_segment_png(gt_folder / file_name, ground_truth.segment_ids)
            _write_segment_png(prediction_folder / file_name, prediction.segment_ids)
            pairs.append(({'image_id': str(index), 'file_name': file_name,
                           'segments_info': [{'id': s.id, 'category_id': s.class_id, 'iscrowd': int(s.is_crowd),
                                              'area': s.area} for s in ground_truth.segments]},
                          {'image_id': str(index), 'file_name': file_name,
                           'segments_info': [{'id': s.id, 'category_id': s.class_id} for s in prediction.segments]}))
        with contextlib.redirect_stdout(io.StringIO()):  # it reports progress per call
            return official.pq_compute_single_core(0, pairs, str(gt_folder), str(prediction_folder), categories)


def frame_statistics(ground_truth: PanopticGroundTruth, prediction: PanopticResult, label_set: LabelSet) -> PQStat:
    """``statistics`` of one frame."""
    return statistics([(ground_truth, prediction)], label_set)


def merge(stats: Iterable[PQStat]) -> PQStat:
    """One ``PQStat`` of several (frames, bags): the sums of their counts and IoUs, as the official
    evaluation merges its workers'."""
    merged = _official().PQStat()
    for stat in stats:
        merged += stat
    return merged


def statistics_to_dict(stat: PQStat) -> dict[str, dict]:
    """A ``PQStat`` as JSON values (class id as text -> tp, fp, fn, iou), e.g. to keep a bag's."""
    return {str(class_id): {'tp': int(values.tp), 'fp': int(values.fp), 'fn': int(values.fn),
                            'iou': float(values.iou)}
            for class_id, values in sorted(stat.pq_per_cat.items())}


def statistics_from_dict(values: dict[str, dict]) -> PQStat:
    """The ``PQStat`` that ``statistics_to_dict`` wrote."""
    stat = _official().PQStat()
    for class_id, counts in values.items():
        entry = stat[int(class_id)]
        entry.tp, entry.fp, entry.fn, entry.iou = counts['tp'], counts['fp'], counts['fn'], counts['iou']
    return stat


def panoptic_scores(stat: PQStat, label_set: LabelSet) -> dict:
    """PQ, SQ and RQ (fractions) averaged over the classes present in ground truth or prediction,
    for all classes, things and stuff (None where there is none, with ``n`` the number averaged),
    and per class (None for a class neither present nor predicted): the official averaging."""
    categories = _categories(label_set)
    scores = {}
    for group, is_thing in (('all', None), ('things', True), ('stuff', False)):
        try:
            average, per_class = stat.pq_average(categories, isthing=is_thing)
        except ZeroDivisionError:  # no class of the group anywhere
            scores[group] = {'pq': None, 'sq': None, 'rq': None, 'n': 0}
            continue
        scores[group] = {name: (value if name == 'n' else float(value)) for name, value in average.items()}
        if group == 'all':
            scores['per_class'] = {
                categories[class_id]['name']: _class_scores(stat.pq_per_cat.get(class_id), values)
                for class_id, values in per_class.items()}
    if 'per_class' not in scores:
        scores['per_class'] = {label.name: None for label in label_set.classes}
    return scores


def _class_scores(counts, values: dict) -> Optional[dict]:
    """A class's scores and counts, None where it is neither in the ground truth nor predicted."""
    if counts is None or counts.tp + counts.fp + counts.fn == 0:
        return None
    return {'pq': float(values['pq']), 'sq': float(values['sq']), 'rq': float(values['rq']),
            'tp': int(counts.tp), 'fp': int(counts.fp), 'fn': int(counts.fn)}
