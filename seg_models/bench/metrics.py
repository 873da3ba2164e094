"""Segmentation metrics: Cityscapes' official evaluation (cityscapesscripts) and an independent
confusion-matrix computation for every label set (and to cross-check the official numbers).

cityscapesscripts evaluates files: predictions as labelId PNGs (semantic) and as one text file per
image listing mask PNGs (instances), ground truth as gtFine *_labelIds.png / *_instanceIds.png.
``CityscapesFiles`` writes them into a working folder; the official functions read them there.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from seg_models.data.labels import LabelSet, cityscapes_train_id_to_label_id
from seg_models.segmenters.instance_postprocess import InstanceResult


def confusion_matrix(ground_truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C + 1) pixel counts, rows = ground-truth class, columns = predicted class; the last column
    counts predictions outside the classes (unlabeled). Ground-truth pixels outside the classes
    (ignore) are not counted."""
    valid = ground_truth < num_classes
    truth = ground_truth[valid].astype(np.int64)
    predicted = np.minimum(prediction[valid].astype(np.int64), num_classes)
    return np.bincount(truth * (num_classes + 1) + predicted,
                       minlength=num_classes * (num_classes + 1)).reshape(num_classes, num_classes + 1)


def scores_from_confusion(matrix: np.ndarray, names: list[str]) -> dict:
    """Per-class IoU (NaN for a class neither present nor predicted), mIoU over the others, pixel
    accuracy."""
    true_positive = np.diag(matrix[:, :-1]).astype(np.float64)
    false_negative = matrix.sum(axis=1) - true_positive
    false_positive = matrix[:, :-1].sum(axis=0) - true_positive
    union = true_positive + false_negative + false_positive
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = matrix.sum()
    return {'per_class_iou': {name: (None if math.isnan(value) else float(value)) for name, value in zip(names, iou)},
            'miou': float(np.nanmean(iou)) if not np.isnan(iou).all() else None,
            'pixel_accuracy': float(true_positive.sum() / total) if total else None}


def _numpy2_compatible(official_module) -> None:
    """cityscapesscripts 2.3 was written for numpy 1: it calls ``np.in1d`` (removed in numpy 2.4;
    given back as its documented equivalent, ``isin`` on the flattened array) and writes its helper
    JSON with numpy integers in it (numpy 2 returns those where numpy 1 returned Python ints).
    Nothing about the metrics changes."""
    if not hasattr(np, 'in1d'):
        np.in1d = lambda values, test, assume_unique=False, invert=False: np.isin(
            np.ravel(values), test, assume_unique=assume_unique, invert=invert)

    def write_json(dictionary, file_name):
        with open(file_name, 'w') as handle:
            json.dump(dictionary, handle, default=lambda o: o.item() if isinstance(o, np.generic) else o.__dict__,
                      sort_keys=True, indent=4)

    official_module.writeDict2JSON = write_json


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """cityscapesscripts writes helper files (matches.json) into the current directory."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class CityscapesFiles:
    """Predictions and ground truth as the official Cityscapes evaluation reads them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / 'gt').mkdir(parents=True, exist_ok=True)
        (folder / 'pred').mkdir(parents=True, exist_ok=True)
        self._train_to_label = cityscapes_train_id_to_label_id()
        self.semantic_pairs: list[tuple[str, str]] = []  # (prediction, ground truth) files
        self.instance_pairs: list[tuple[str, str]] = []

    def add_ground_truth(self, name: str, label_ids: Optional[np.ndarray] = None,
                         instance_ids: Optional[np.ndarray] = None) -> None:
        """gtFine-style files of one frame: *_gtFine_labelIds.png and/or *_gtFine_instanceIds.png."""
        if label_ids is not None:
            cv2.imwrite(str(self._ground_truth_path(name, 'labelIds')), label_ids)
        if instance_ids is not None:
            cv2.imwrite(str(self._ground_truth_path(name, 'instanceIds')), instance_ids)

    def _ground_truth_path(self, name: str, kind: str) -> Path:
        return self.folder / 'gt' / f'{name}_gtFine_{kind}.png'

    def add_semantic(self, name: str, prediction_train_ids: np.ndarray) -> None:
        prediction_path = self.folder / 'pred' / f'{name}_labelIds.png'
        cv2.imwrite(str(prediction_path), self._train_to_label[prediction_train_ids])
        self.semantic_pairs.append((str(prediction_path), str(self._ground_truth_path(name, 'labelIds'))))

    def add_instances(self, name: str, prediction: InstanceResult, label_set: LabelSet) -> None:
        from cityscapesscripts.helpers.labels import name2label

        masks = prediction.full_frame_masks()
        lines = []
        for index, (instance, mask) in enumerate(zip(prediction.instances, masks)):
            mask_name = f'{name}_{index:03d}.png'
            cv2.imwrite(str(self.folder / 'pred' / mask_name), mask.astype(np.uint8) * 255)
            label_id = name2label[label_set.names[instance.class_id]].id
            lines.append(f'{mask_name} {label_id} {instance.score:.6f}\n')
        text_path = self.folder / 'pred' / f'{name}_instances.txt'
        text_path.write_text(''.join(lines))
        self.instance_pairs.append((str(text_path), str(self._ground_truth_path(name, 'instanceIds'))))

    def select(self, frame_prefix: str) -> 'CityscapesFiles':
        """The same files, only the frames named ``<frame_prefix>_...`` (one camera of several)."""
        view = copy.copy(self)
        view.semantic_pairs = [pair for pair in self.semantic_pairs
                               if Path(pair[1]).name.startswith(frame_prefix + '_')]
        view.instance_pairs = [pair for pair in self.instance_pairs
                               if Path(pair[1]).name.startswith(frame_prefix + '_')]
        return view

    def _missing_ground_truth(self, pairs: list[tuple[str, str]]) -> list[str]:
        return [ground_truth for _, ground_truth in pairs if not Path(ground_truth).is_file()]

    def semantic_scores(self) -> dict:
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as official

        _numpy2_compatible(official)
        missing = self._missing_ground_truth(self.semantic_pairs)
        if missing:
            raise ValueError(f'{len(missing)} frames with predictions have no ground truth, e.g. {missing[0]}')
        has_instances = all(Path(gt.replace('labelIds', 'instanceIds')).is_file() for _, gt in self.semantic_pairs)
        args = official.args
        args.quiet, args.JSONOutput, args.evalPixelAccuracy = True, False, False
        args.evalInstLevelScore = has_instances
        predictions, ground_truths = zip(*self.semantic_pairs)
        with _working_directory(self.folder):
            results = official.evaluateImgLists(list(predictions), list(ground_truths), args)
        per_class = {name: (None if math.isnan(score) else float(score))
                     for name, score in results['classScores'].items()}
        return {'per_class_iou': per_class, 'miou': float(results['averageScoreClasses']),
                'iiou': float(results['averageScoreInstClasses']) if has_instances else None,
                'categories_iou': float(results['averageScoreCategories'])}

    def instance_matches(self) -> dict:
        """cityscapesscripts' matching of every frame's predicted and ground-truth instances, as plain
        JSON values: the matches of several evaluations pooled (``pooled_matches``) give the AP of
        all their frames together (``instance_scores_from_matches``)."""
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as official

        _numpy2_compatible(official)
        missing = self._missing_ground_truth(self.instance_pairs)
        if missing:
            raise ValueError(f'{len(missing)} frames with instances have no instance ground truth, e.g. {missing[0]}')
        args = _instance_args(official)
        args.predictionPath = os.path.abspath(self.folder / 'pred')
        args.gtInstancesFile = str(self.folder / 'gtInstances.json')
        if os.path.exists(args.gtInstancesFile):
            os.remove(args.gtInstancesFile)
        predictions, ground_truths = zip(*self.instance_pairs)
        with _working_directory(self.folder):
            ground_truth_instances = official.getGtInstances(list(ground_truths), args)
            matches = official.matchGtWithPreds(list(predictions), list(ground_truths), ground_truth_instances, args)
        return json.loads(json.dumps(matches, default=lambda value: value.item()))

    def instance_scores(self) -> dict:
        return instance_scores_from_matches(self.instance_matches())


def _instance_args(official_module):
    """The official instance evaluation's settings, quiet, with its classes of interest."""
    args = official_module.args
    args.quiet, args.JSONOutput = True, False
    official_module.setInstanceLabels(args)
    return args


def pooled_matches(matches_by_source: dict[str, dict]) -> dict:
    """Instance matches of several evaluations (e.g. bags) in one dict, each frame named after its
    source so frames of different sources never collide."""
    return {f'{source}/{frame}': match for source, matches in matches_by_source.items()
            for frame, match in matches.items()}


def instance_scores_from_matches(matches: dict) -> dict:
    """AP and AP50, overall and per class, from cityscapesscripts' instance matches (of one
    evaluation, or pooled over many: the predictions of every frame ranked together)."""
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as official

    _numpy2_compatible(official)
    args = _instance_args(official)
    averages = official.computeAverages(official.evaluateMatches(matches, args), args)
    return {'ap': float(averages['allAp']), 'ap50': float(averages['allAp50%']),
            'per_class': {name: {'ap': _number(values['ap']), 'ap50': _number(values['ap50%'])}
                          for name, values in averages['classes'].items()}}


def _number(value: float) -> Optional[float]:
    return None if math.isnan(value) else float(value)


def latency_summary(latencies_ms: list[float]) -> dict:
    if not latencies_ms:
        return {'count': 0}
    values = np.asarray(latencies_ms)
    return {'count': len(values), 'p50_ms': float(np.percentile(values, 50)),
            'p95_ms': float(np.percentile(values, 95)), 'p99_ms': float(np.percentile(values, 99)),
            'max_ms': float(values.max())}
