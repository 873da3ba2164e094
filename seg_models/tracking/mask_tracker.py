"""Track ids that persist across one camera's frames, associated by the IoU of box-cropped masks.

Each frame's instances are matched to the camera's live tracks in ByteTrack's two stages (Zhang
et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box", ECCV 2022): sure
detections (score >= high_score) first, against every live track; then the less sure ones
(low_score <= score < high_score) against the tracks left, with a stricter IoU, so that a briefly
doubtful detection keeps its object's track alive without ever starting one of its own. Each stage
is an optimal assignment (``scipy.optimize.linear_sum_assignment``) between detections and tracks
of the same class. The less sure detections reach the tracker below the published score too (down
to ``InstanceFilter.track_low_score``: the segmenter keeps them apart in
``InstanceResult.low_score_instances``); they are matched in the second stage only and never
start a track, whatever their score, and ``track`` publishes those that continue a confirmed
track, as ByteTrack outputs every track its second stage kept, and drops the others.

The similarity is the IoU of the two masks, each placed at its integer window (``Instance.roi``)
in camera pixels and compared only where the windows overlap: two objects whose boxes cross keep
apart because their pixels do, where box IoU cannot tell them apart (test/test_tracking.py, the
crossing sequence of ``seg_models.data.moving_shapes``). Before matching, a track's box and mask
window are moved by its velocity (pixels per frame, from its last matched boxes) times the frames
since its last match: a constant-velocity prediction, no Kalman filter.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from seg_models.configs import TrackerSettings
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult

SIMILARITIES = ('mask', 'box')
# How many of a track's last matched boxes its velocity is estimated from: more than two steadies
# it against a detector's jitter, few enough to follow a turn within a couple of frames.
VELOCITY_MATCHES = 3
# Assignment cost of a pair that may not match: far above any sum of allowed costs (each at most 1).
FORBIDDEN_COST = 1e6
# A gap resets the tracks only when it is also this many times the camera's usual interval between
# the frames the tracker sees: a node slower than max_gap (a CPU Mask R-CNN at 2 s a frame) keeps
# its tracks, while a camera that stops and comes back still starts afresh.
GAP_INTERVALS = 3.0
# Weight of the newest interval in the usual interval (an exponential average).
INTERVAL_WEIGHT = 0.2


def _window_overlaps(rois_a: np.ndarray, rois_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Left, top, right, bottom (A, B) of the overlap of each pair of (x, y, width, height) windows,
    and whether it holds any pixel."""
    left = np.maximum(rois_a[:, None, 0], rois_b[None, :, 0])
    top = np.maximum(rois_a[:, None, 1], rois_b[None, :, 1])
    right = np.minimum(rois_a[:, None, 0] + rois_a[:, None, 2], rois_b[None, :, 0] + rois_b[None, :, 2])
    bottom = np.minimum(rois_a[:, None, 1] + rois_a[:, None, 3], rois_b[None, :, 1] + rois_b[None, :, 3])
    return left, top, right, bottom, (right > left) & (bottom > top)


def mask_iou_matrix(masks_a: Sequence[np.ndarray], rois_a: np.ndarray, masks_b: Sequence[np.ndarray],
                    rois_b: np.ndarray, compared: Optional[np.ndarray] = None,
                    areas_a: Optional[np.ndarray] = None, areas_b: Optional[np.ndarray] = None,
                    least: Union[float, np.ndarray] = 0.0) -> np.ndarray:
    """(A, B) IoU of every pair of masks, each a (height, width) bool array at its (x, y, width,
    height) window in the same pixel frame (windows may reach outside the image).

    The intersection is counted only on the overlap of the two windows, and only for pairs whose
    windows overlap and that ``compared`` (A, B) bool allows (the others are 0): no full-frame
    array, and the cost grows with the overlapping pairs, not with the image. The union is the sum
    of the two areas (``areas_a`` / ``areas_b``: pixel counts of the masks, counted here when not
    given) less the intersection.

    ``least`` (a number, or one per column (B,)): a pair whose IoU cannot reach it is not counted
    either (0): its intersection is at most the smaller area or the windows' overlap, whichever is
    less. A matcher that ignores IoUs under its threshold gives it, and skips most pairs of big
    windows that only touch at their edges.
    """
    rois_a = np.asarray(rois_a, np.int64).reshape(-1, 4)
    rois_b = np.asarray(rois_b, np.int64).reshape(-1, 4)
    ious = np.zeros((len(rois_a), len(rois_b)))
    if not ious.size:
        return ious
    left, top, right, bottom, overlapping = _window_overlaps(rois_a, rois_b)
    if compared is not None:
        overlapping &= compared
    areas_a = np.asarray([np.count_nonzero(mask) for mask in masks_a] if areas_a is None else areas_a)
    areas_b = np.asarray([np.count_nonzero(mask) for mask in masks_b] if areas_b is None else areas_b)
    if np.any(least):
        most_shared = np.minimum(np.minimum(areas_a[:, None], areas_b[None, :]), (right - left) * (bottom - top))
        overlapping &= most_shared >= least * (areas_a[:, None] + areas_b[None, :] - most_shared)
    rows, columns = np.nonzero(overlapping)
    if not len(rows):
        return ious
    area_a, area_b = areas_a.tolist(), areas_b.tolist()
    # per pair, the overlap in each mask's own pixels: top, bottom, left, right
    overlap = np.stack([top[rows, columns], bottom[rows, columns], left[rows, columns], right[rows, columns]], 1)
    in_a = (overlap - rois_a[rows][:, [1, 1, 0, 0]]).tolist()
    in_b = (overlap - rois_b[columns][:, [1, 1, 0, 0]]).tolist()
    for row, column, (top_a, bottom_a, left_a, right_a), (top_b, bottom_b, left_b, right_b) in zip(
            rows.tolist(), columns.tolist(), in_a, in_b):
        intersection = np.count_nonzero(masks_a[row][top_a:bottom_a, left_a:right_a] &
                                        masks_b[column][top_b:bottom_b, left_b:right_b])
        if intersection:
            ious[row, column] = intersection / (area_a[row] + area_b[column] - intersection)
    return ious


def box_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of continuous x1y1x2y2 boxes."""
    boxes_a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    width = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2]) - np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    height = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3]) - np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def optimal_matches(similarity: np.ndarray, least: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pairs matched by the assignment with the most pairs of similarity at
    least ``least`` (and above 0), and among those the largest total similarity."""
    allowed = (similarity >= least) & (similarity > 0)
    if not allowed.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, columns = linear_sum_assignment(np.where(allowed, 1.0 - similarity, FORBIDDEN_COST))
    kept = allowed[rows, columns]
    return rows[kept], columns[kept]


@dataclass
class Track:
    """One object followed across frames: its last matched detection and its motion (plain Python
    values: a track changes every frame, and numpy's per-call cost would dominate)."""

    class_id: int
    box: tuple[float, float, float, float]  # x1y1x2y2 of the last match
    roi: tuple[int, int, int, int]  # x, y, width, height of the last match: the mask's window
    mask: np.ndarray  # the last match's mask (the instance's own array, not copied)
    area: int  # pixels of ``mask`` (counted for mask similarity only)
    last_frame: int  # the frame of the last match
    hits: int = 0  # frames with a match, the first detection included
    track_id: int = 0  # the published id; 0 until min_hits frames are matched
    centres: deque = field(default_factory=lambda: deque(maxlen=VELOCITY_MATCHES))  # (frame, x, y) of matches
    velocity: tuple[float, float] = (0.0, 0.0)  # of the box centre, pixels per frame

    @classmethod
    def start(cls, instance: Instance, frame: int, area: int) -> Track:
        """A new track from its first detection."""
        track = cls(instance.class_id, instance.box, instance.roi, instance.mask, area, frame)
        track.follow(instance, frame, area)
        return track

    def follow(self, instance: Instance, frame: int, area: int) -> None:
        """Take ``instance`` as the track's latest appearance, and estimate the velocity again."""
        self.box, self.roi, self.mask, self.area = instance.box, instance.roi, instance.mask, area
        self.last_frame = frame
        self.hits += 1
        x1, y1, x2, y2 = instance.box
        self.centres.append((frame, (x1 + x2) / 2, (y1 + y2) / 2))
        (first_frame, first_x, first_y), (last_frame, last_x, last_y) = self.centres[0], self.centres[-1]
        if last_frame > first_frame:
            frames = last_frame - first_frame
            self.velocity = ((last_x - first_x) / frames, (last_y - first_y) / frames)


class MaskTracker:
    """Track ids for one camera's frames, given in order (one tracker per camera).

    ``update`` gives each instance its ``track_id``: a positive id once its track has been matched
    in ``min_hits`` frames (the first one included), else 0. Ids count up from 1 in the order
    tracks are confirmed and are never given again, not even after a reset: a consumer never sees
    an old id come back for another object.
    """

    def __init__(self, settings: TrackerSettings) -> None:
        if settings.similarity not in SIMILARITIES:
            raise ValueError(f'unknown tracker similarity {settings.similarity!r}; known: {", ".join(SIMILARITIES)}')
        if settings.low_score > settings.high_score:
            raise ValueError(f'tracker low_score {settings.low_score} is above high_score {settings.high_score}')
        self.settings = settings
        self.tracks: list[Track] = []
        self._last_id = 0
        self._frame = 0
        self._last_stamp: Optional[float] = None
        self._usual_interval: Optional[float] = None  # seconds between frames, kept across resets

    @property
    def ids_given(self) -> int:
        """How many track ids this tracker has given (the last one)."""
        return self._last_id

    def reset(self) -> None:
        """Forget every track (ids keep counting up from the last one given)."""
        self.tracks = []
        self._last_stamp = None

    def track(self, result: InstanceResult, stamp: float) -> str:
        """``update`` with the result's published and low-score instances; then the low-score ones
        that continue a confirmed track join the published ones (after them: they score lower) and
        the rest are dropped. Returns ``update``'s reset reason."""
        reason = self.update(result.instances, stamp, followers=result.low_score_instances)
        result.instances.extend(instance for instance in result.low_score_instances if instance.track_id)
        result.low_score_instances = []
        return reason

    def update(self, instances: Sequence[Instance], stamp: float, followers: Sequence[Instance] = ()) -> str:
        """Associate one frame's ``instances`` (stamped ``stamp`` seconds) with the tracks and set each
        one's ``track_id`` in place; ``followers`` (unpublished detections) may only continue tracks,
        in the second stage, whatever their score. Returns '' or, where the tracks were reset
        before this frame (a stamp that went back, a bag looping; or a gap longer than max_gap),
        why: for the caller to log once."""
        reason = self._reset_reason(stamp)
        if reason:
            self.reset()
        elif self._last_stamp is not None:
            interval = stamp - self._last_stamp
            self._usual_interval = interval if self._usual_interval is None else \
                (1 - INTERVAL_WEIGHT) * self._usual_interval + INTERVAL_WEIGHT * interval
        self._last_stamp = stamp
        self._frame += 1
        for instance in (*instances, *followers):
            instance.track_id = 0
        if self.settings.enabled:
            least = self.settings.low_score
            self._associate([instance for instance in instances if instance.score >= least],
                            [instance for instance in followers if instance.score >= least])
        return reason

    def _reset_reason(self, stamp: float) -> str:
        if self._last_stamp is None:
            return ''
        if stamp < self._last_stamp:
            return f'the stamp went back from {self._last_stamp:.3f} s to {stamp:.3f} s: tracks reset'
        gap = stamp - self._last_stamp
        if self._usual_interval is None:  # the first interval sets the usual one: a slow node is not a gap
            return ''
        if gap > max(self.settings.max_gap, GAP_INTERVALS * self._usual_interval):
            return (f'no frame for {gap:.2f} s (more than max_gap {self.settings.max_gap} s and '
                    f'{GAP_INTERVALS:g} times the usual {self._usual_interval:.2f} s): tracks reset')
        return ''

    def _associate(self, detections: list[Instance], followers: list[Instance]) -> None:
        settings, frame = self.settings, self._frame
        sure = np.array([detection.score >= settings.high_score for detection in detections]
                        + [False] * len(followers), bool)
        detections = detections + followers
        counts_areas = settings.similarity == 'mask'
        areas = [int(np.count_nonzero(detection.mask)) if counts_areas else 0 for detection in detections]
        similarity = self._similarity(detections, areas, np.where(sure, settings.match_iou, settings.low_match_iou))
        track_matched = np.zeros(len(self.tracks), bool)
        followed_by: list[Optional[Track]] = [None] * len(detections)  # each detection's track
        for stage_detections, least in ((np.flatnonzero(sure), settings.match_iou),
                                        (np.flatnonzero(~sure), settings.low_match_iou)):
            free_tracks = np.flatnonzero(~track_matched)
            rows, columns = optimal_matches(similarity[np.ix_(free_tracks, stage_detections)], least)
            for track_index, detection_index in zip(free_tracks[rows].tolist(), stage_detections[columns].tolist()):
                track = followed_by[detection_index] = self.tracks[track_index]
                track.follow(detections[detection_index], frame, areas[detection_index])
                track_matched[track_index] = True
        self.tracks = [track for track, matched in zip(self.tracks, track_matched)
                       if matched or frame - track.last_frame <= settings.max_age]
        for index in np.flatnonzero(sure).tolist():  # sure detections left start tracks
            if followed_by[index] is None:
                followed_by[index] = Track.start(detections[index], frame, areas[index])
                self.tracks.append(followed_by[index])
        for detection, track in zip(detections, followed_by):
            if track is None:
                continue
            if not track.track_id and track.hits >= settings.min_hits:
                self._last_id += 1
                track.track_id = self._last_id
            detection.track_id = track.track_id

    def _similarity(self, detections: list[Instance], areas: list[int], least: np.ndarray) -> np.ndarray:
        """(tracks, detections) IoU of each track's prediction with each detection; 0 across classes
        (and, for masks, where it is under the detection's stage's ``least``: never matched)."""
        if not self.tracks or not detections:
            return np.zeros((len(self.tracks), len(detections)))
        track_classes = np.array([track.class_id for track in self.tracks])
        detection_classes = np.array([detection.class_id for detection in detections])
        same_class = track_classes[:, None] == detection_classes[None, :]
        shifts = np.zeros((len(self.tracks), 2))
        if self.settings.motion:
            elapsed = np.array([self._frame - track.last_frame for track in self.tracks], np.float64)
            shifts = np.array([track.velocity for track in self.tracks]) * elapsed[:, None]
        if self.settings.similarity == 'box':
            predicted_boxes = np.array([track.box for track in self.tracks], np.float64) + np.tile(shifts, 2)
            boxes = np.array([detection.box for detection in detections], np.float64)
            return np.where(same_class, box_iou_matrix(predicted_boxes, boxes), 0.0)
        predicted_rois = np.array([track.roi for track in self.tracks], np.int64)
        predicted_rois[:, :2] += np.rint(shifts).astype(np.int64)
        return mask_iou_matrix([track.mask for track in self.tracks], predicted_rois,
                               [detection.mask for detection in detections],
                               np.array([detection.roi for detection in detections], np.int64), compared=same_class,
                               areas_a=np.array([track.area for track in self.tracks]), areas_b=np.array(areas),
                               least=least)
