"""Tracking scores (seg_models.bench.tracking_metrics) on small synthetic sequences: three rectangles
moving over ten 60x80 frames, checked against TrackEval's own evaluation of MOTS text files."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from seg_models.bench.tracking_metrics import (TrackedObject, encoded_mask, merge_tracking_stats,
                                               sequence_tracking_stats, tracking_scores)

HEIGHT, WIDTH, FRAMES = 60, 80, 10
PEDESTRIAN, CAR = 2, 1  # MOTS Challenge's pedestrian class id; KITTI MOTS adds car


def rectangle(top: int, left: int, height: int = 12, width: int = 16) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[top:top + height, left:left + width] = True
    return mask


def moving_rectangles(frame: int, shift: int = 0, classes=(PEDESTRIAN,) * 3) -> list[TrackedObject]:
    """Three objects (ids 1, 2, 3) in rows of their own, never overlapping, moving right at different
    speeds; ``shift`` moves every mask sideways (a prediction a few pixels off)."""
    return [TrackedObject(track_id, class_id, rectangle(5 + 18 * index, 2 + (index + 3) * frame + shift))
            for index, (track_id, class_id) in enumerate(zip((1, 2, 3), classes))]


def ground_truth(classes=(PEDESTRIAN,) * 3) -> list[list[TrackedObject]]:
    return [moving_rectangles(frame, classes=classes) for frame in range(FRAMES)]


def with_ids_swapped_from(frames, first_swapped_frame: int, ids=(1, 2)) -> list[list[TrackedObject]]:
    swap = {ids[0]: ids[1], ids[1]: ids[0]}
    return [[obj._replace(track_id=swap.get(obj.track_id, obj.track_id)) if frame >= first_swapped_frame else obj
             for obj in objects] for frame, objects in enumerate(frames)]


def without_track(frames, track_id: int) -> list[list[TrackedObject]]:
    return [[obj for obj in objects if obj.track_id != track_id] for objects in frames]


def imperfect_predictions() -> list[list[TrackedObject]]:
    """Masks a few pixels off (IoU varying over the alpha thresholds), ids 1 and 2 swapped from
    frame 6, object 3 missed in frames 2 to 4, a false positive in the free bottom rows."""
    frames = [moving_rectangles(frame, shift=frame % 4) for frame in range(FRAMES)]
    frames = with_ids_swapped_from(frames, 6)
    frames = [[obj for obj in objects if not (obj.track_id == 3 and 2 <= frame <= 4)]
              for frame, objects in enumerate(frames)]
    frames[7].append(TrackedObject(9, PEDESTRIAN, rectangle(55, 30, height=4)))
    return frames


def scores_of(ground_truth_frames, predicted_frames, **options) -> dict:
    return tracking_scores(sequence_tracking_stats(ground_truth_frames, predicted_frames, **options))


# ----------------------------------------------------------------------------------------------
# TrackEval's own evaluation of the same data, from MOTS text files


def write_mots_text(path, frames, first_frame: int) -> None:
    """One line per object: frame, id, class, height, width, COCO RLE (MOTS Challenge / KITTI MOTS)."""
    lines = []
    for frame, objects in enumerate(frames, start=first_frame):
        for track_id, class_id, mask in objects:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            lines.append(f'{frame} {track_id} {class_id} {HEIGHT} {WIDTH} {rle["counts"].decode("ascii")}\n')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(lines))


def trackeval_on_files(tmp_path, sequences: dict, kitti: bool = False) -> dict:
    """trackeval.Evaluator with MOTSChallenge (pedestrians) or KittiMOTS (cars and pedestrians) on
    ``{name: (ground_truth_frames, predicted_frames)}`` written as text files: per sequence and
    'COMBINED_SEQ', per class, per metric, TrackEval's raw results."""
    import trackeval

    ground_truth_folder, trackers_folder = tmp_path / 'gt', tmp_path / 'trackers'
    for name, (truth, predicted) in sequences.items():
        truth_path = ground_truth_folder / 'label_02' / f'{name}.txt' if kitti else \
            ground_truth_folder / name / 'gt' / 'gt.txt'
        write_mots_text(truth_path, truth, first_frame=0 if kitti else 1)
        write_mots_text(trackers_folder / 'ours' / 'data' / f'{name}.txt', predicted, first_frame=0 if kitti else 1)
    config = {'GT_FOLDER': str(ground_truth_folder), 'TRACKERS_FOLDER': str(trackers_folder),
              'OUTPUT_FOLDER': str(tmp_path / 'output'), 'TRACKERS_TO_EVAL': ['ours'], 'PRINT_CONFIG': False,
              'SEQ_INFO': {name: len(truth) for name, (truth, _) in sequences.items()}}
    dataset = trackeval.datasets.KittiMOTS(config) if kitti else \
        trackeval.datasets.MOTSChallenge({**config, 'SKIP_SPLIT_FOL': True})
    evaluator = trackeval.Evaluator({'PRINT_RESULTS': False, 'PRINT_CONFIG': False, 'TIME_PROGRESS': False,
                                     'OUTPUT_SUMMARY': False, 'OUTPUT_DETAILED': False, 'PLOT_CURVES': False,
                                     'LOG_ON_ERROR': None})
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({'PRINT_CONFIG': False}),
               trackeval.metrics.Identity({'PRINT_CONFIG': False})]
    results, messages = evaluator.evaluate([dataset], metrics)
    name = dataset.get_name()
    assert messages[name]['ours'] == 'Success', messages
    return results[name]['ours']


def assert_same_results(ours: dict, theirs: dict) -> None:
    """Every field of every metric TrackEval computed, equal."""
    assert set(ours) == set(theirs)
    for metric, fields in theirs.items():
        for field, value in fields.items():
            np.testing.assert_allclose(np.asarray(ours[metric][field], dtype=float), np.asarray(value, dtype=float),
                                       rtol=1e-12, atol=1e-12, err_msg=f'{metric} {field}')


def headline_of(results: dict) -> dict:
    return {'HOTA': 100 * np.mean(results['HOTA']['HOTA']), 'DetA': 100 * np.mean(results['HOTA']['DetA']),
            'AssA': 100 * np.mean(results['HOTA']['AssA']), 'MOTSA': 100 * results['CLEAR']['MOTA'],
            'IDF1': 100 * results['Identity']['IDF1'], 'IDSW': results['CLEAR']['IDSW']}


def assert_headline_equal(scores: dict, results: dict) -> None:
    expected = headline_of(results)
    assert {field: scores[field] for field in expected} == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------------


def test_the_ground_truth_echo_scores_100():
    scores = scores_of(ground_truth(), ground_truth())
    for field in ('HOTA', 'DetA', 'AssA', 'LocA', 'MOTSA', 'IDF1'):
        assert scores[field] == pytest.approx(100), field
    assert scores['IDSW'] == 0 and scores['GT_IDs'] == scores['IDs'] == 3
    assert scores['GT_Dets'] == scores['Dets'] == 3 * FRAMES
    assert list(scores['per_class']) == [PEDESTRIAN]


def test_swapped_ids_lower_association_but_not_detection():
    """Ids 1 and 2 swapped from frame 5 on: CLEAR counts one switch for each of the two ground-truth
    tracks (IDSW == 2), so MOTSA = (30 - 2) / 30."""
    scores = scores_of(ground_truth(), with_ids_swapped_from(ground_truth(), 5))
    assert scores['DetA'] == pytest.approx(100)
    assert scores['AssA'] < 100 and scores['IDF1'] < 100 and scores['HOTA'] < 100
    assert scores['IDSW'] == 2
    assert scores['MOTSA'] == pytest.approx(100 * (3 * FRAMES - 2) / (3 * FRAMES))


def test_masks_kept_as_rle_score_as_the_full_frame_masks():
    """What a long bag keeps in memory (a few KB an object, not H x W bytes) scores the same."""
    def encoded(frames):
        return [[TrackedObject(o.track_id, o.class_id, encoded_mask(o.mask)) for o in frame] for frame in frames]

    swapped = with_ids_swapped_from(ground_truth(), 5)
    full = sequence_tracking_stats(ground_truth(), swapped)
    assert sequence_tracking_stats(encoded(ground_truth()), encoded(swapped)) == full
    assert sequence_tracking_stats(ground_truth(), encoded(swapped)) == full
    assert tracking_scores(full)['HOTA'] < 100


def test_a_missed_object_lowers_detection():
    scores = scores_of(ground_truth(), without_track(ground_truth(), 3))
    assert scores['DetA'] < 100 and scores['MOTSA'] == pytest.approx(100 * 2 / 3)
    assert scores['AssA'] == pytest.approx(100)  # what is found is associated perfectly


def test_predictions_with_track_id_0_are_ignored():
    untracked = [objects + [TrackedObject(0, PEDESTRIAN, rectangle(55, 10, height=4))] for objects in ground_truth()]
    assert sequence_tracking_stats(ground_truth(), untracked) == sequence_tracking_stats(ground_truth(), ground_truth())
    with pytest.raises(ValueError, match='track id 0'):
        sequence_tracking_stats(untracked, ground_truth())


def test_a_prediction_matches_only_ground_truth_of_its_class():
    truth = ground_truth(classes=(PEDESTRIAN, PEDESTRIAN, CAR))
    predicted = ground_truth(classes=(PEDESTRIAN, PEDESTRIAN, PEDESTRIAN))
    scores = scores_of(truth, predicted)
    assert scores['per_class'][CAR]['DetA'] == 0 and scores['per_class'][CAR]['GT_Dets'] == FRAMES
    assert scores['per_class'][PEDESTRIAN]['Dets'] == 3 * FRAMES and scores['per_class'][PEDESTRIAN]['MOTSA'] < 100
    assert scores['MOTSA'] == pytest.approx(100 * (2 * FRAMES - FRAMES) / (3 * FRAMES))  # 10 FP, 10 FN
    assert scores_of(truth, truth, class_ids=[CAR])['per_class'].keys() == {CAR}


def test_the_scores_are_trackeval_s_own_mots_challenge_evaluation(tmp_path):
    predicted = imperfect_predictions()
    stats = sequence_tracking_stats(ground_truth(), predicted)
    theirs = trackeval_on_files(tmp_path, {'bag-a': (ground_truth(), predicted)})
    assert_same_results(stats['classes'][str(PEDESTRIAN)], theirs['bag-a']['pedestrian'])
    scores = tracking_scores(stats)
    assert_headline_equal(scores, theirs['bag-a']['pedestrian'])
    assert 0 < scores['HOTA'] < 100 and 0 < scores['LocA'] < 100 and scores['IDSW'] == 2


def test_merged_sequences_equal_trackeval_s_combination(tmp_path):
    """Two bags evaluated apart (and cached as JSON) then merged: TrackEval's combination of both."""
    sequences = {'bag-a': (ground_truth(), imperfect_predictions()),
                 'bag-b': (ground_truth(), without_track(with_ids_swapped_from(ground_truth(), 3, ids=(2, 3)), 1))}
    per_bag = [json.loads(json.dumps(sequence_tracking_stats(*sequences[name]))) for name in sorted(sequences)]
    merged = merge_tracking_stats(per_bag)
    theirs = trackeval_on_files(tmp_path, sequences)['COMBINED_SEQ']['pedestrian']
    assert_same_results(merged['classes'][str(PEDESTRIAN)], theirs)
    assert_headline_equal(tracking_scores(merged), theirs)
    assert merge_tracking_stats([merged]) == merged  # merged statistics merge on


def test_classes_are_evaluated_apart_as_kitti_mots_does(tmp_path):
    classes = (CAR, PEDESTRIAN, CAR)
    truth = ground_truth(classes=classes)
    predicted = [[obj._replace(class_id=classes[obj.track_id - 1]) if obj.track_id <= 3 else obj
                  for obj in objects] for objects in imperfect_predictions()]
    stats = sequence_tracking_stats(truth, predicted)
    theirs = trackeval_on_files(tmp_path, {'0000': (truth, predicted)}, kitti=True)['0000']
    assert_same_results(stats['classes'][str(CAR)], theirs['car'])
    assert_same_results(stats['classes'][str(PEDESTRIAN)], theirs['pedestrian'])
    scores = tracking_scores(stats)
    assert min(scores['per_class'][CAR]['HOTA'], scores['per_class'][PEDESTRIAN]['HOTA']) <= scores['HOTA'] \
        <= max(scores['per_class'][CAR]['HOTA'], scores['per_class'][PEDESTRIAN]['HOTA'])


def test_nothing_to_evaluate_gives_no_scores():
    empty = [[] for _ in range(FRAMES)]
    scores = scores_of(empty, empty)
    assert scores['HOTA'] is None and scores['per_class'] == {}
