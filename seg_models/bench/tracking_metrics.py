"""Tracking scores with TrackEval: HOTA (DetA, AssA, LocA), CLEAR (MOTSA, i.e. MOTA on masks) and
Identity (IDF1), for sequences whose instance ground truth keeps its ids across frames.

TrackEval's MOTS Challenge dataset reads text files and knows one class ('pedestrian'; KITTI MOTS:
'car' and 'pedestrian'). Here a sequence held in memory goes through the same code: MOTSChallenge's
mask IoU (pycocotools RLE), its per-class preprocessing and TrackEval's per-sequence evaluation,
with our class ids as its classes. Each class is evaluated on its own, as MOTS does, so a
prediction only ever matches ground truth of its own class; the figures over all classes are
TrackEval's detection-averaged class combination (its 'cls_comb_det_av').

Per-sequence statistics are TrackEval's raw per-class metric results as plain JSON values, so a
fleet can cache them and merge them later exactly as TrackEval combines sequences
(``merge_tracking_stats``); scores come from statistics of one sequence or merged ones alike.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import numpy as np


class TrackedObject(NamedTuple):
    """One object in one frame: its track id (> 0; in predictions 0 means untracked), its class
    and its full-frame (H, W) bool mask, or that mask as pycocotools' RLE (``encoded_mask``: what
    a long sequence keeps in memory, a few KB an object instead of H x W bytes)."""
    track_id: int
    class_id: int
    mask: Union[np.ndarray, dict]


def encoded_mask(mask: np.ndarray) -> dict:
    """A full-frame (H, W) mask as pycocotools' RLE, the form TrackEval's MOTS data holds."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))


Frame = Sequence[TrackedObject]
"""The objects of one frame (plain ``(track_id, class_id, mask)`` tuples do as well)."""

TRACKING_METRICS = ('HOTA', 'CLEAR', 'Identity', 'Count')
"""TrackEval's metric classes whose raw results the statistics hold (Count: as its Evaluator adds)."""

_SEQUENCE = 'sequence'
_TRACKER = 'predictions'


def _trackeval_metrics() -> list:
    """Fresh metric objects with TrackEval's defaults (similarity threshold 0.5), quiet."""
    from trackeval.metrics import CLEAR, HOTA, Count, Identity

    return [HOTA(), CLEAR({'PRINT_CONFIG': False}), Identity({'PRINT_CONFIG': False}), Count()]


def _encoded_frames(frames: Sequence[Frame], is_ground_truth: bool) -> dict:
    """Ids, classes and RLE masks per frame, as MOTSChallenge's file reader returns them."""
    from pycocotools import mask as mask_utils

    ids, classes, masks = [], [], []
    for index, frame in enumerate(frames):
        frame_ids, frame_classes, frame_masks = [], [], []
        for track_id, class_id, mask in frame:
            if track_id < 0 or (is_ground_truth and track_id == 0):
                owner = 'ground truth' if is_ground_truth else 'prediction'
                raise ValueError(f'frame {index}: {owner} track id {track_id}; track ids are > 0')
            if track_id == 0:  # an untracked prediction: no track to score
                continue
            frame_ids.append(int(track_id))
            frame_classes.append(int(class_id))
            frame_masks.append(mask if isinstance(mask, dict) else encoded_mask(mask))
        ids.append(np.asarray(frame_ids, dtype=int))
        classes.append(np.asarray(frame_classes, dtype=int))
        masks.append(frame_masks)
    prefix = 'gt' if is_ground_truth else 'tracker'
    raw = {f'{prefix}_ids': ids, f'{prefix}_classes': classes, f'{prefix}_dets': masks,
           'num_timesteps': len(frames), 'seq': _SEQUENCE}
    if is_ground_truth:  # no crowd / ignore regions: MOTSChallenge's empty region for every frame
        raw['gt_ignore_region'] = [mask_utils.merge([], intersect=False) for _ in frames]
    return raw


def _in_memory_mots_dataset(ground_truth: dict, predictions: dict, class_ids: list[int]):
    """A MOTSChallenge dataset of one sequence that takes its raw data from memory instead of
    files, with our class ids as its classes; everything else is MOTSChallenge's own code."""
    from trackeval.datasets import MOTSChallenge
    from trackeval.datasets._base_dataset import _BaseDataset

    class InMemoryMOTS(MOTSChallenge):
        def __init__(self) -> None:
            _BaseDataset.__init__(self)  # MOTSChallenge's own looks for its folders and files
            self.should_classes_combine = False
            self.use_super_categories = False
            self.tracker_list, self.seq_list = [_TRACKER], [_SEQUENCE]
            self.seq_lengths = {_SEQUENCE: ground_truth['num_timesteps']}
            self.class_list = [str(class_id) for class_id in class_ids]
            self.class_name_to_class_id = {name: name for name in self.class_list}

        def _load_raw_file(self, tracker, seq, is_gt):
            return ground_truth if is_gt else predictions

    return InMemoryMOTS()


def sequence_tracking_stats(ground_truth_frames: Sequence[Frame], predicted_frames: Sequence[Frame],
                            class_ids: Optional[Sequence[int]] = None) -> dict:
    """TrackEval's raw HOTA, CLEAR, Identity and Count results of one sequence, per class.

    ``ground_truth_frames`` and ``predicted_frames``: one list of ``TrackedObject`` per frame, the
    same number of frames. Track ids must be unique within a frame (across classes too, as in
    TrackEval). Predictions with track id 0 (untracked) are skipped. ``class_ids``: the classes to
    evaluate, each on its own; None: every class in the ground truth or the predictions (a class in
    neither adds nothing to any score, merged or not). Masks may overlap (TrackEval's MOTS file
    reader refuses overlaps; the metrics themselves are defined for them).

    Returns ``{'classes': {str(class_id): {metric: {field: value}}}}`` in plain JSON values.
    """
    from trackeval.eval import eval_sequence
    from trackeval.utils import validate_metrics_list

    if len(ground_truth_frames) != len(predicted_frames):
        raise ValueError(f'{len(ground_truth_frames)} ground-truth frames but {len(predicted_frames)} predicted')
    ground_truth = _encoded_frames(ground_truth_frames, is_ground_truth=True)
    predictions = _encoded_frames(predicted_frames, is_ground_truth=False)
    for index, (truth, predicted) in enumerate(zip(ground_truth['gt_dets'], predictions['tracker_dets'])):
        sizes = {tuple(mask['size']) for mask in truth + predicted}
        if len(sizes) > 1:  # pycocotools would compare masks of different sizes without a word
            raise ValueError(f'frame {index}: masks of several sizes (height, width): {sorted(sizes)}')
    if class_ids is None:
        class_ids = sorted({int(c) for frame in ground_truth['gt_classes'] + predictions['tracker_classes']
                            for c in frame})
    dataset = _in_memory_mots_dataset(ground_truth, predictions, [int(c) for c in class_ids])
    metrics = _trackeval_metrics()
    names = validate_metrics_list(metrics)
    results = eval_sequence(_SEQUENCE, dataset, _TRACKER, dataset.class_list, metrics, names)
    return {'classes': {name: {metric: _plain(fields) for metric, fields in by_metric.items()}
                        for name, by_metric in results.items()}}


def merge_tracking_stats(stats: Sequence[dict]) -> dict:
    """Statistics of several sequences (or of merged ones) as one: per class, TrackEval's
    ``combine_sequences`` of each metric, as its Evaluator combines sequences. A class absent from
    a sequence's statistics adds nothing there, as an evaluated but empty class would."""
    metrics = _trackeval_metrics()
    class_names = sorted({name for entry in stats for name in entry['classes']}, key=int)
    merged = {}
    for name in class_names:
        present = [entry['classes'][name] for entry in stats if name in entry['classes']]
        merged[name] = {metric.get_name(): _plain(metric.combine_sequences(
            {index: _arrays(entry[metric.get_name()]) for index, entry in enumerate(present)}))
            for metric in metrics}
    return {'classes': merged}


_HEADLINE_FIELDS = ('HOTA', 'DetA', 'AssA', 'LocA', 'DetRe', 'DetPr', 'AssRe', 'AssPr', 'MOTSA', 'MOTSP', 'sMOTSA',
                    'IDF1', 'IDSW', 'GT_IDs', 'IDs', 'GT_Dets', 'Dets')


def tracking_scores(stats: dict) -> dict:
    """Headline figures of (merged or single-sequence) statistics, in percent as TrackEval prints
    them (HOTA, DetA, AssA, LocA: the mean over its alpha thresholds): over all classes
    (detection-averaged), and per class id under 'per_class'. None where nothing was evaluated."""
    if not stats['classes']:
        return {**{field: None for field in _HEADLINE_FIELDS}, 'per_class': {}}
    metrics = _trackeval_metrics()
    per_class = {int(name): _headline({metric: _arrays(fields) for metric, fields in by_metric.items()})
                 for name, by_metric in stats['classes'].items()}
    combined = {metric.get_name(): metric.combine_classes_det_averaged(
        {name: _arrays(by_metric[metric.get_name()]) for name, by_metric in stats['classes'].items()})
        for metric in metrics}
    return {**_headline(combined), 'per_class': per_class}


def _headline(results: dict) -> dict:
    hota, clear, identity, count = (results[name] for name in TRACKING_METRICS)
    scores = {field: 100 * float(np.mean(hota[field]))
              for field in ('HOTA', 'DetA', 'AssA', 'LocA', 'DetRe', 'DetPr', 'AssRe', 'AssPr')}
    scores.update(MOTSA=100 * float(clear['MOTA']), MOTSP=100 * float(clear['MOTP']),
                  sMOTSA=100 * float(clear['sMOTA']), IDF1=100 * float(identity['IDF1']),
                  IDSW=int(clear['IDSW']))
    scores.update({field: int(count[field]) for field in ('GT_IDs', 'IDs', 'GT_Dets', 'Dets')})
    return scores


def _plain(fields: dict) -> dict:
    """TrackEval's results (numpy arrays and scalars) as JSON values; floats round-trip exactly."""
    return {field: value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value
            for field, value in fields.items()}


def _arrays(fields: dict) -> dict:
    """JSON values back into what TrackEval's combine functions compute with (arrays per alpha)."""
    return {field: np.asarray(value, dtype=float) if isinstance(value, list) else value
            for field, value in fields.items()}
