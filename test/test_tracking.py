import re
from dataclasses import replace

import cv2
import numpy as np
import pytest

from seg_models.configs import TrackerSettings
from seg_models.data.moving_shapes import (BACK_BAR, BAR, DISC, FRONT_BAR, instance_from_frame_mask, meeting_frame,
                                           moving_shapes)
from seg_models.segmenters.instance_postprocess import Instance, InstanceResult
from seg_models.tracking import MaskTracker, box_iou_matrix, mask_iou_matrix

IMAGE_SIZE = (200, 300)
FRAME_PERIOD = 0.1  # seconds between the frames of these tests


def disc(x: int, y: int, radius: int = 12, class_id: int = DISC, score: float = 0.9) -> Instance:
    mask = np.zeros(IMAGE_SIZE, np.uint8)
    cv2.circle(mask, (x, y), radius, 1, cv2.FILLED)
    return instance_from_frame_mask(mask.astype(bool), class_id, score)


def track_ids(tracker: MaskTracker, frames: list[list[Instance]], first_stamp: float = 0.0,
              interval: float = FRAME_PERIOD) -> list[list[int]]:
    """Each frame's track ids, in the order of its instances (frames ``interval`` seconds apart)."""
    ids = []
    for index, instances in enumerate(frames):
        assert tracker.update(instances, first_stamp + index * interval) == ''
        ids.append([instance.track_id for instance in instances])
    return ids


def test_an_object_moving_straight_keeps_its_id_beside_one_standing_still():
    frames = [[disc(30 + 5 * index, 60), disc(150, 140)] for index in range(25)]
    ids = track_ids(MaskTracker(TrackerSettings(min_hits=2)), frames)
    assert ids[0] == [0, 0]
    assert all(frame_ids == [1, 2] for frame_ids in ids[1:]), ids


@pytest.mark.parametrize('min_hits', [1, 2, 4])
def test_an_id_is_published_once_its_track_is_matched_in_min_hits_frames(min_hits):
    ids = track_ids(MaskTracker(TrackerSettings(min_hits=min_hits)), [[disc(100, 100)] for _ in range(6)])
    assert ids == [[0]] * (min_hits - 1) + [[1]] * (7 - min_hits)


@pytest.mark.parametrize('motion', [True, False])
def test_a_track_survives_max_age_unmatched_frames_and_ends_after(motion):
    settings = TrackerSettings(max_age=3, min_hits=1, motion=motion)
    seen, missed = [disc(100, 100)], []
    survived = track_ids(MaskTracker(settings), [seen, seen] + [missed] * 3 + [seen])
    assert survived[-1] == [1]
    ended = track_ids(MaskTracker(settings), [seen, seen] + [missed] * 4 + [seen])
    assert ended[-1] == [2]  # a new track: its own id


def test_motion_prediction_finds_a_moving_object_again_after_frames_without_it():
    """A disc moving 6 pixels a frame is missed for 3 frames: 24 pixels further on it no longer
    overlaps where it was last seen, but overlaps where its track was predicted."""
    frames = [[disc(40 + 6 * index, 100, radius=8)] if not 5 <= index < 8 else [] for index in range(12)]
    with_motion = track_ids(MaskTracker(TrackerSettings(min_hits=1, motion=True)), frames)
    without_motion = track_ids(MaskTracker(TrackerSettings(min_hits=1, motion=False)), frames)
    assert set(sum(with_motion, [])) == {1}
    assert without_motion[8:] == [[2]] * 4


@pytest.mark.parametrize('similarity', ['mask', 'box'])
def test_a_detection_of_another_class_never_takes_a_track(similarity):
    settings = TrackerSettings(min_hits=2, similarity=similarity)
    tracker = MaskTracker(settings)
    track_ids(tracker, [[disc(100, 100)]] * 3)
    assert track_ids(tracker, [[disc(100, 100, class_id=BAR)]] * 2, first_stamp=0.3) == [[0], [2]]
    assert track_ids(tracker, [[disc(100, 100)]], first_stamp=0.5) == [[1]]  # the disc's track lived on


def test_a_less_sure_detection_keeps_a_track_alive_but_never_starts_one():
    settings = TrackerSettings(min_hits=1, max_age=2, high_score=0.6, low_score=0.1, motion=False)
    tracker = MaskTracker(settings)
    track_ids(tracker, [[disc(100, 100, score=0.9)]])
    assert track_ids(tracker, [[disc(100, 100, score=0.3)]] * 6, first_stamp=0.1) == [[1]] * 6  # beyond max_age
    never_tracked = [[disc(200, 60, score=0.3)]] * 6
    assert track_ids(tracker, never_tracked, first_stamp=0.7) == [[0]] * 6
    # under low_score a detection does not count at all: the track ends after max_age frames
    assert track_ids(tracker, [[disc(100, 100, score=0.05)]] * 3 + [[disc(100, 100)]], first_stamp=1.3) == \
        [[0]] * 3 + [[2]]


def test_below_the_published_score_only_detections_continuing_a_confirmed_track_are_published():
    """ByteTrack's output: the segmenter keeps detections down to track_low_score apart
    (InstanceResult.low_score_instances); ``track`` publishes those its second stage matched to a
    confirmed track, with that track's id, after the published ones, and drops the rest."""
    tracker = MaskTracker(TrackerSettings(min_hits=2, high_score=0.6, low_score=0.1, motion=False))
    published_score = 0.5

    def frame(*instances: Instance) -> InstanceResult:
        return InstanceResult.split_by_score(IMAGE_SIZE, sorted(instances, key=lambda i: -i.score), published_score)

    for index in range(2):  # confirmed in the second frame
        result = frame(disc(150, 100, score=0.9))
        tracker.track(result, index * FRAME_PERIOD)
    assert [(i.score, i.track_id) for i in result.instances] == [(0.9, 1)]
    occluded = frame(disc(150, 100, score=0.3), disc(250, 160, score=0.4))
    assert occluded.instances == [] and len(occluded.low_score_instances) == 2
    assert tracker.track(occluded, 2 * FRAME_PERIOD) == ''
    # the tracked object stays published with its id; the new one, below the published score, is dropped
    assert [(i.score, i.track_id, i.roi) for i in occluded.instances] == [(0.3, 1, disc(150, 100).roi)]
    assert occluded.low_score_instances == []
    # above track_high_score but below the published score (a node's score_threshold 0.9): never starts a track
    unpublished = InstanceResult.split_by_score(IMAGE_SIZE, [disc(60, 60, score=0.8)], 0.9)
    for index in range(3):
        tracker.track(unpublished, (3 + index) * FRAME_PERIOD)
        assert unpublished.instances == [] and unpublished.low_score_instances == []
        unpublished.low_score_instances = [disc(60, 60, score=0.8)]
    mixed = frame(disc(150, 100, score=0.45), disc(250, 160, score=0.8))
    tracker.track(mixed, 6 * FRAME_PERIOD)
    assert [(i.score, i.track_id) for i in mixed.instances] == [(0.8, 0), (0.45, 1)]


def test_a_less_sure_detection_needs_the_second_stage_iou():
    """Shifted by 9 pixels, a disc of radius 12 has an IoU of 0.36 with its track: enough for a
    sure detection (match_iou 0.2), not for a less sure one (low_match_iou 0.5)."""
    settings = TrackerSettings(min_hits=1, motion=False)
    shifted_iou = mask_iou_matrix([disc(100, 100).mask], [disc(100, 100).roi], [disc(109, 100).mask],
                                  [disc(109, 100).roi])[0, 0]
    assert settings.match_iou < shifted_iou < settings.low_match_iou
    for score, expected in ((0.9, [[1], [1]]), (0.3, [[1], [0]])):
        assert track_ids(MaskTracker(settings), [[disc(100, 100)], [disc(109, 100, score=score)]]) == expected


def test_a_stamp_going_back_or_a_gap_resets_the_tracks_and_ids_are_never_given_again():
    tracker = MaskTracker(TrackerSettings(min_hits=2, max_gap=1.0))
    same_place = [disc(100, 100)]
    track_ids(tracker, [same_place] * 3, first_stamp=12.0)  # id 1, last stamp 12.2
    assert tracker.update(same_place, 0.0) == 'the stamp went back from 12.200 s to 0.000 s: tracks reset'
    assert same_place[0].track_id == 0  # a new track, not confirmed yet
    assert track_ids(tracker, [same_place] * 2, first_stamp=0.1) == [[2], [2]]
    assert tracker.update(same_place, 1.1) == ''  # 0.9 s: within max_gap
    assert tracker.update(same_place, 3.6) == ('no frame for 2.50 s (more than max_gap 1.0 s and 3 times the usual '
                                               '0.26 s): tracks reset')
    assert track_ids(tracker, [same_place] * 2, first_stamp=3.7) == [[3], [3]]
    tracker.reset()
    assert track_ids(tracker, [same_place] * 2, first_stamp=0.0) == [[0], [4]]


def test_a_node_slower_than_max_gap_keeps_its_tracks_and_a_long_pause_still_resets_them():
    """A CPU Mask R-CNN answering every 2 s: each interval is over max_gap, none is a gap."""
    tracker = MaskTracker(TrackerSettings(min_hits=2, max_gap=1.0))
    same_place = [disc(100, 100)]
    assert track_ids(tracker, [same_place] * 4, first_stamp=0.0, interval=2.0) == [[0], [1], [1], [1]]
    assert tracker.update(same_place, 16.0).startswith('no frame for 10.00 s')  # > 3 x the usual 2 s
    assert tracker.ids_given == 1 and same_place[0].track_id == 0


def test_a_low_score_above_the_high_score_is_refused():
    with pytest.raises(ValueError, match='low_score 0.7 is above high_score 0.6'):
        MaskTracker(TrackerSettings(low_score=0.7))


def test_mask_iou_matrix_equals_a_full_frame_computation_on_random_masks():
    rng = np.random.default_rng(3)
    frame_height, frame_width, margin = 40, 60, 10  # windows may reach up to margin pixels outside the frame

    def random_masks(count):
        sizes = rng.integers(1, 25, (count, 2))
        rois = np.column_stack([rng.integers(-margin, frame_width, count), rng.integers(-margin, frame_height, count),
                                sizes[:, 1], sizes[:, 0]])
        return [rng.random(size) < rng.uniform(0.2, 0.9) for size in sizes], rois

    def full_frame(masks, rois):
        canvas = np.zeros((len(masks), frame_height + 2 * margin + 25, frame_width + 2 * margin + 25), bool)
        for canvas_mask, mask, (x, y, width, height) in zip(canvas, masks, rois):
            canvas_mask[y + margin:y + margin + height, x + margin:x + margin + width] = mask
        return canvas.reshape(len(masks), -1)

    masks_a, rois_a = random_masks(30)
    masks_b, rois_b = random_masks(40)
    frame_a, frame_b = full_frame(masks_a, rois_a), full_frame(masks_b, rois_b)
    intersection = frame_a.astype(np.int64) @ frame_b.T.astype(np.int64)
    union = frame_a.sum(1)[:, None] + frame_b.sum(1)[None, :] - intersection
    expected = intersection / union
    ious = mask_iou_matrix(masks_a, rois_a, masks_b, rois_b)
    assert np.count_nonzero(expected) > 50  # overlapping pairs are compared, not only empty ones
    np.testing.assert_allclose(ious, expected, rtol=1e-12)
    compared = rng.random(expected.shape) < 0.5
    np.testing.assert_allclose(mask_iou_matrix(masks_a, rois_a, masks_b, rois_b, compared=compared),
                               np.where(compared, expected, 0), rtol=1e-12)
    # with a least IoU: exact where it is reached; below it, exact or 0 (pairs that cannot reach it are skipped)
    least = rng.uniform(0.05, 0.4, len(masks_b))
    bounded = mask_iou_matrix(masks_a, rois_a, masks_b, rois_b, areas_a=[mask.sum() for mask in masks_a], least=least)
    reached = expected >= least
    assert 5 < np.count_nonzero(reached) < np.count_nonzero(expected)
    np.testing.assert_allclose(bounded[reached], expected[reached], rtol=1e-12)
    assert np.all((bounded[~reached] == 0) | np.isclose(bounded[~reached], expected[~reached], rtol=1e-12))


def test_box_iou_matrix():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 40]], np.float64)
    np.testing.assert_allclose(box_iou_matrix(boxes, boxes), [[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]])


def test_tracking_off_or_an_unknown_similarity():
    instances = [disc(100, 100)]
    tracker = MaskTracker(TrackerSettings(enabled=False, min_hits=1))
    assert track_ids(tracker, [instances] * 3) == [[0]] * 3
    with pytest.raises(ValueError, match=re.escape("unknown tracker similarity 'iou'; known: mask, box")):
        MaskTracker(TrackerSettings(similarity='iou'))


def track_ids_of_objects(settings: TrackerSettings) -> dict[int, list[int]]:
    """Over the moving-shapes sequence, the track ids each true object was published under, in
    frame order (a perfect detector's instances)."""
    tracker = MaskTracker(settings)
    published = {}
    for frame in moving_shapes():
        instances = frame.instances()
        assert tracker.update(instances, frame.stamp) == ''
        true_ids = {id(truth.mask): truth.object_id for truth in frame.truths}
        for instance in instances:
            if instance.track_id:
                published.setdefault(true_ids[id(instance.mask)], []).append(instance.track_id)
    return published


def test_the_moving_shapes_crossing_overlaps_boxes_not_masks():
    meeting = meeting_frame(40)
    for frame in moving_shapes():
        truths = {truth.object_id: truth for truth in frame.truths}
        assert set(truths) == {1, 2, 3} and all(truth.mask.any() for truth in frame.truths)
        back, front = truths[BACK_BAR], truths[FRONT_BAR]
        if frame.index == meeting:
            assert box_iou_matrix([back.box], [front.box])[0, 0] > 0.9
            assert mask_iou_matrix([back.mask], [back.roi], [front.mask], [front.roi])[0, 0] == 0  # front hides back
            # the front bar cuts the back one in two: two pieces on its mask
            assert cv2.connectedComponents(back.mask.astype(np.uint8))[0] - 1 == 2


def test_mask_association_keeps_every_id_through_the_crossing_where_box_association_swaps_them():
    """At the meeting the bars turn back; the constant-velocity prediction puts each bar's box
    where the other bar's box is. By box IoU each bar then takes the other's track (each true id
    seen under two track ids); by mask IoU ("/" against "\\") each keeps its own."""
    mask_ids = track_ids_of_objects(TrackerSettings())
    assert sorted(mask_ids) == [1, 2, 3]
    assert all(len(set(ids)) == 1 for ids in mask_ids.values()), mask_ids
    assert len({ids[0] for ids in mask_ids.values()}) == 3
    assert all(len(ids) == 39 for ids in mask_ids.values())  # published in every frame after the first

    box_ids = track_ids_of_objects(replace(TrackerSettings(), similarity='box'))
    back, front = box_ids[BACK_BAR], box_ids[FRONT_BAR]
    meeting = meeting_frame(40)
    # published from frame 1 on: index i is frame i + 1; the bars swap ids right after the meeting
    assert len(set(back[:meeting])) == len(set(front[:meeting])) == 1 and back[0] != front[0]
    assert back[meeting:] == [front[0]] * len(back[meeting:]) and front[meeting:] == [back[0]] * len(front[meeting:])
    assert len(set(box_ids[3])) == 1  # the disc is not involved
