"""Panoptic quality and tracking in ``seg_bag evaluate`` and ``evaluate-fleet``: a moving_shapes bag
(instance ids that persist across frames) made by ``seg_bag make``; the ground-truth echo scores
PQ 100 and HOTA 100 on Ray and through ROS; per-bag statistics merge to those of all frames at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import REPO_ROOT, NodeProcess
from seg_models.configs import TrackerSettings
from seg_models.data.datasets import CITYSCAPES_LABEL_IDS, GroundTruthInfo, open_dataset
from seg_models.data.labels import cityscapes_things
from seg_models.tracking.mask_tracker import MaskTracker
from seg_perception.evaluation.evaluate import PanopticTrackingScores, evaluate, panoptic_tracking_results
from seg_perception.evaluation.fleet import merged
from seg_perception.evaluation.fleet_worker import BagFrame, score_scene
from seg_perception.evaluation.ground_truth import class_ids_of_ground_truth, instances_of
from seg_perception.evaluation.report import write_report
from seg_perception.messages.topics import stamp_seconds

PERFECT = {'pq': 1.0, 'sq': 1.0, 'rq': 1.0}


def seg_bag(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'seg_perception.evaluation', *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))


@pytest.fixture(scope='module')
def shapes_bags(tmp_path_factory) -> list[Path]:
    """Two moving_shapes bags of different lengths, made as users make them."""
    root = tmp_path_factory.mktemp('shapes')
    bags = []
    for frames in (8, 12):
        bag = root / f'shapes_{frames}.bag'
        made = seg_bag('make', 'moving_shapes', bag, '--kind', 'moving_shapes', '--max-frames', frames)
        assert made.returncode == 0, made.stderr
        bags.append(bag)
    return bags


def assert_perfect(results: dict, frames: int) -> None:
    """PQ 100 over all classes, things (car, person) and stuff (road); HOTA, AssA, IDF1 100; three
    objects per sequence, never switched."""
    panoptic = results['panoptic']
    assert panoptic['frames'] == frames
    for group, classes in (('all', 3), ('things', 2), ('stuff', 1)):
        assert {name: panoptic[group][name] for name in PERFECT} == pytest.approx(PERFECT)
        assert panoptic[group]['n'] == classes
    tracking = results['tracking']
    assert tracking['frames'] == frames
    for name in ('HOTA', 'DetA', 'AssA', 'LocA', 'MOTSA', 'IDF1'):
        assert tracking[name] == pytest.approx(100.0), name
    assert tracking['IDSW'] == 0 and tracking['GT_IDs'] == tracking['IDs'] == 3 * tracking['sequences']


def test_a_bag_without_the_persistence_field_reads_as_ids_that_do_not_persist():
    old = json.dumps({'dataset': 'cityscapes', 'label_set': CITYSCAPES_LABEL_IDS, 'has_semantic': True,
                      'has_instances': True})
    assert GroundTruthInfo.from_json(old).instance_ids_persist is False


def test_the_echo_scores_pq_and_hota_100_over_a_fleet_merged_exactly(tmp_path, shapes_bags):
    report = tmp_path / 'report'
    echoed = seg_bag('evaluate-fleet', *shapes_bags, report, '--predictor', 'ground_truth_echo', '--workers', 2)
    assert echoed.returncode == 0, echoed.stdout + echoed.stderr
    assert 'PQ 100.0%' in echoed.stdout and 'HOTA 100.0%' in echoed.stdout
    results = json.loads((report / 'report.json').read_text())
    assert_perfect(results['overall'], frames=20)
    for row, frames in zip(results['bags'], (8, 12)):
        assert_perfect(row, frames)
    assert results['overall']['tracking']['sequences'] == 2
    overall_counts = results['overall']['panoptic']['statistics']
    for class_id, counts in overall_counts.items():  # the fleet's counts: the sums of its bags'
        for count in ('tp', 'fp', 'fn'):
            assert counts[count] == sum(row['panoptic']['statistics'].get(class_id, {}).get(count, 0)
                                        for row in results['bags'])
    assert '## Panoptic quality' in (report / 'report.md').read_text()


def imperfect_detections(frame: BagFrame, index: int):
    """A perfect detector's instances, without the smallest one in every third frame (untracked)."""
    result = instances_of(frame.instances, cityscapes_things())
    if index % 3 == 1:
        result.instances = result.instances[:-1]
    return result


def test_panoptic_and_tracking_statistics_of_bags_merge_to_those_of_all_frames_at_once():
    """Frames split into two "bags" (two tracked sequences) and scored each on its own merge to the
    panoptic counts of all frames scored together, and the fleet merges them the same way."""
    dataset = open_dataset(Path('moving_shapes'), 'moving_shapes', max_frames=10)
    info = dataset.info
    frames = [BagFrame((index, 0), sample.rgb, sample.semantic, sample.instances)
              for index, sample in enumerate(dataset.samples)]

    def scored(part: list[BagFrame]) -> PanopticTrackingScores:
        scene, tracker = PanopticTrackingScores(info, cityscapes_things()), MaskTracker(TrackerSettings())
        for frame in part:  # the real tracker gives the track ids, as in the fleet's direct path
            semantic_ids = class_ids_of_ground_truth(frame.semantic, info.label_set)
            detections = imperfect_detections(frame, frame.key[0])
            tracker.track(detections, stamp_seconds(frame.key))
            score_scene(scene, frame, detections, semantic_ids)
        return scene

    whole, bags = scored(frames), [scored(frames[:4]), scored(frames[4:])]
    pooled = panoptic_tracking_results([bag.as_json() for bag in bags])
    at_once = panoptic_tracking_results([whole.as_json()])
    for class_id, counts in at_once['panoptic']['statistics'].items():
        assert {name: pooled['panoptic']['statistics'][class_id][name] for name in ('tp', 'fp', 'fn')} == \
            {name: counts[name] for name in ('tp', 'fp', 'fn')}
        assert pooled['panoptic']['statistics'][class_id]['iou'] == pytest.approx(counts['iou'])
    assert pooled['panoptic']['all']['pq'] == pytest.approx(at_once['panoptic']['all']['pq'])
    assert at_once['panoptic']['things']['pq'] < 1.0  # the missed objects count
    assert pooled['tracking']['GT_Dets'] == at_once['tracking']['GT_Dets'] == 3 * len(frames)
    assert 0 < pooled['tracking']['Dets'] < 3 * len(frames)  # missed, and unconfirmed tracks
    assert pooled['tracking']['HOTA'] < 100.0
    assert pooled['tracking']['sequences'] == 2 and at_once['tracking']['sequences'] == 1

    results = [{'bag': f'bag_{index}', 'seconds': 0.0, 'cameras': {'/camera/image_raw': {'frames': 5, **bag.as_json()}}}
               for index, bag in enumerate(bags)]
    fleet = merged(results)['overall']
    assert fleet['panoptic'] == pooled['panoptic'] and fleet['tracking'] == pooled['tracking']


@pytest.mark.ros
def test_the_echo_replayed_through_ros_scores_pq_and_hota_100(tmp_path, shapes_bags):
    bag, result_bag = shapes_bags[0], tmp_path / 'result.bag'
    with NodeProcess('seg_perception.evaluation.ground_truth_echo',
                     ['-p', f'bag:={bag}', '-r', 'image:=/camera/image_raw'], tmp_path / 'echo.log') as echo:
        replayed = seg_bag('replay', bag, result_bag, '--startup-timeout', 120)
        assert replayed.returncode == 0, replayed.stderr + echo.output()
    results, evaluations = evaluate(result_bag)
    write_report(results, evaluations, tmp_path / 'report')
    written = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert_perfect(written, frames=8)
    assert written['panoptic']['source'].startswith('fused')
    assert written['instances_cityscapes_official']['ap'] == pytest.approx(1.0)
    assert np.isclose(written['semantic']['miou'], 1.0)
