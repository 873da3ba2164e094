"""``seg_bag evaluate-fleet``: bags on real (local) Ray workers, merged exactly (confusion matrices
summed, instance matches pooled), faults survived, results cached per bag; directly or through the
real nodes."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset_folders import write_cityscapes_folder
from ros_helpers import CAMVID_IMAGES, REPO_ROOT
from seg_models.segmenters.instance_postprocess import InstanceResult
from seg_models.data.labels import cityscapes_things
from seg_perception.evaluation.fleet import KILL_ONCE_ENV, fleet_bags, merged, write_fleet_report
from seg_perception.evaluation.fleet_worker import FleetModel, Predictor, evaluate_bag
from seg_perception.evaluation.ground_truth import instances_of
from seg_models.bench.metrics import CityscapesFiles, instance_scores_from_matches, pooled_matches

needs_camvid = pytest.mark.skipif(not CAMVID_IMAGES.is_dir(), reason=f'needs the CamVid frames in {CAMVID_IMAGES}')
SMALL_SEMANTIC = ('-p', 'input_height:=64', '-p', 'input_width:=128', '-p', 'semantic_segmentation:label_set:=camvid',
                  '-p', 'backend:=pytorch')


def seg_bag(*args, env=None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, '-m', 'seg_perception.evaluation', *map(str, args)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as expired:  # what it printed, not pytest's truncated repr
        output = expired.stderr.decode(errors='replace') if isinstance(expired.stderr, bytes) else expired.stderr
        pytest.fail(f'seg_bag {args[0]} ran over {expired.timeout:.0f} s; its output ended with:\n'
                    f'{(output or "")[-4000:]}')


@pytest.fixture(scope='module')
def drives(tmp_path_factory) -> Path:
    """Three small CamVid bags and one that cannot be read, in one folder."""
    root = tmp_path_factory.mktemp('drives')
    for index in range(3):
        made = seg_bag('make', CAMVID_IMAGES.parent, root / f'drive_{index}.bag', '--max-frames', 2 + index)
        assert made.returncode == 0, made.stderr
    (root / 'broken.bag').mkdir()
    (root / 'broken.bag' / 'metadata.yaml').write_text('rosbag2_bagfile_information: [')
    return root


@pytest.mark.slow
def test_bags_are_found_in_folders_globs_and_lists(tmp_path, drives):
    listed = tmp_path / 'bags.txt'
    listed.write_text(f'# two of them\n{drives / "drive_0.bag"}\n{drives / "drive_1.bag"}\n')
    assert fleet_bags([str(drives)]) == sorted(drives.iterdir())
    assert fleet_bags([str(drives / 'drive_*.bag'), f'@{listed}']) == [drives / f'drive_{i}.bag' for i in range(3)]


def overrides(arguments) -> tuple[str, ...]:
    """The -p values of command-line ``arguments``."""
    return tuple(value for flag, value in zip(arguments, arguments[1:]) if flag == '-p')


@pytest.mark.slow
@needs_camvid
def test_a_fleet_is_merged_exactly_survives_a_dead_worker_and_a_broken_bag_and_resumes(tmp_path, drives):
    report = tmp_path / 'report'
    bags = [drives / f'drive_{index}.bag' for index in range(3)] + [drives / 'broken.bag']
    first = seg_bag('evaluate-fleet', *bags, report, '--tasks', 'semantic', *SMALL_SEMANTIC, '--workers', 2,
                    env={KILL_ONCE_ENV: str(tmp_path / 'killed')})
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / 'killed').exists(), 'a worker died mid-fleet'
    assert '3 bags evaluated (0 from the cache), 1 not; 9 frames, mIoU' in first.stdout
    results = json.loads((report / 'report.json').read_text())
    assert [row['frames'] for row in results['bags']] == [2, 3, 4]  # the dead worker's bag counted once
    assert results['errors'][0]['bag'].endswith('broken.bag') and 'metadata.yaml' in results['errors'][0]['error']

    # The merged matrix is the sum of each bag evaluated on its own, here, without Ray; mIoU is
    # scored from it, not averaged over bags.
    model = FleetModel(tasks=('semantic',), overrides=overrides(SMALL_SEMANTIC))
    predictor = Predictor(model)
    alone = [evaluate_bag(bag, model, predictor) for bag in bags[:3]]
    summed = sum(np.array(result['cameras']['/camera/image_raw']['confusion']) for result in alone)
    overall = np.array(results['overall']['confusion'])
    np.testing.assert_array_equal(overall, summed)
    assert overall.sum() > 0
    assert results['overall']['frames'] == 9
    assert results['cameras']['/camera/image_raw']['confusion'] == results['overall']['confusion']
    assert results['overall']['miou'] != pytest.approx(np.mean([row['miou'] for row in results['bags']]), abs=1e-9)

    second = seg_bag('evaluate-fleet', *bags, report, '--tasks', 'semantic', *SMALL_SEMANTIC)
    assert second.returncode == 0, second.stdout + second.stderr
    assert '3 bags evaluated (3 from the cache), 1 not; 9 frames' in second.stdout
    resumed = json.loads((report / 'report.json').read_text())
    assert [row['cached'] for row in resumed['bags']] == [True, True, True]
    assert resumed['overall'] == results['overall']

    changed = seg_bag('evaluate-fleet', *bags[:2], report, '--tasks', 'semantic', *SMALL_SEMANTIC,
                      '-p', 'input_width:=96')
    assert '2 bags evaluated (0 from the cache)' in changed.stdout, changed.stdout + changed.stderr


@pytest.mark.slow
@needs_camvid
def test_a_perfect_predictor_scores_100_percent_over_a_fleet_with_instances(tmp_path, drives):
    for index in range(2):
        folder = write_cityscapes_folder(tmp_path / f'city_{index}', frames=2 + index)
        made = seg_bag('make', folder, tmp_path / 'city_bags' / f'city_{index}')
        assert made.returncode == 0, made.stderr
    camvid_bags = [drives / 'drive_0.bag', drives / 'drive_1.bag']
    for bags, instances in (([tmp_path / 'city_bags'], True), (camvid_bags, False)):
        echoed = seg_bag('evaluate-fleet', *bags, tmp_path / f'report_{instances}', '--predictor', 'ground_truth_echo')
        assert echoed.returncode == 0, echoed.stdout + echoed.stderr
        results = json.loads((tmp_path / f'report_{instances}' / 'report.json').read_text())
        assert results['overall']['miou'] == 1.0 and results['overall']['pixel_accuracy'] == 1.0
        assert ('instances' in results['overall']) == instances
        if instances:
            assert results['overall']['instances']['ap'] == pytest.approx(1.0)
            assert results['overall']['instances']['frames'] == 5
            assert [row['instances']['ap'] for row in results['bags']] == [pytest.approx(1.0)] * 2


def test_instance_matches_pooled_over_bags_give_the_ap_of_all_frames_evaluated_together(tmp_path):
    """Per-bag matches pooled score exactly as every frame in one evaluation, and not as the mean of
    per-bag APs: the second "bag"'s confident false positive outranks the first's true positives."""
    folder = write_cityscapes_folder(tmp_path / 'city', frames=4) / 'gtFine' / 'val' / 'testcity'
    things = cityscapes_things()
    together, halves = CityscapesFiles(tmp_path / 'together'), [CityscapesFiles(tmp_path / f'half_{i}') for i in (0, 1)]
    for index, path in enumerate(sorted(folder.glob('*_instanceIds.png'))):
        truth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        found = instances_of(truth, things)
        if index < 2:
            prediction = InstanceResult(found.image_size, [dataclasses.replace(i, score=0.6) for i in found.instances])
        else:
            car = next(instance for instance in found.instances if instance.class_name == 'car')
            width, height = car.roi[2:]  # the car moved into the sky: a false positive
            phantom = dataclasses.replace(car, score=0.9, box=(0.0, 0.0, float(width), float(height)),
                                          roi=(0, 0, width, height))
            prediction = InstanceResult(found.image_size, [phantom, *(i for i in found.instances if i is not car)])
        name = path.name[:-len('_gtFine_instanceIds.png')]
        for files in (together, halves[index // 2]):
            files.add_ground_truth(name, instance_ids=truth)
            files.add_instances(name, prediction, things)
    joint = together.instance_scores()
    per_half = [half.instance_matches() for half in halves]
    pooled = instance_scores_from_matches(pooled_matches({'bag_a': per_half[0], 'bag_b': per_half[1]}))
    assert pooled['ap'] == pytest.approx(joint['ap'], abs=1e-12)
    assert pooled['per_class'] == joint['per_class']
    mean_of_bags = np.mean([instance_scores_from_matches(matches)['ap'] for matches in per_half])
    assert abs(pooled['ap'] - mean_of_bags) > 0.01, (pooled['ap'], mean_of_bags)


def test_a_replay_run_again_is_noted_under_its_bag_in_the_report(tmp_path):
    stall = ('replay: the child process said nothing for 105 s; killed it and its processes, stuck in spin_once '
             '(processes.py:80); ran it again')
    report = merged([{'bag': 'a.bag', 'cameras': {}, 'seconds': 1.0, 'notes': [stall]},
                     {'bag': 'b.bag', 'cameras': {}, 'seconds': 2.0, 'cached': True}])  # cached before notes
    assert [row['notes'] for row in report['bags']] == [[stall], []]
    markdown = write_fleet_report(report, tmp_path).read_text()
    assert f'## Notes\n\n- a.bag: {stall}\n' in markdown and 'b.bag: replay' not in markdown


@pytest.mark.slow
@pytest.mark.ros
@needs_camvid
def test_through_the_nodes_each_worker_on_its_own_domain_scores_as_the_direct_path(tmp_path, drives, fitted_semantic):
    """Two workers replay a bag each through real semantic nodes (a realistic fitted network), on
    ROS domains of their own; the scores equal the direct path's."""
    fitted = ('--semantic-checkpoint', fitted_semantic, '--tasks', 'semantic', '-p', 'input_height:=192',
              '-p', 'input_width:=256', '-p', 'semantic_segmentation:label_set:=camvid',
              '-p', 'semantic_segmentation:architecture:=deeplabv3plus_mobilenet_v3_large',
              '-p', f'engine_dir:={tmp_path / "engines"}')
    domain_base = 150 + int(os.environ.get('ROS_DOMAIN_ID', '0')) % 50
    bags = [drives / 'drive_0.bag', drives / 'drive_1.bag']
    nodes = seg_bag('evaluate-fleet', *bags, tmp_path / 'nodes', *fitted, '--through-nodes', '--workers', 2,
                    '--domain-id-base', domain_base)
    assert nodes.returncode == 0, nodes.stdout + nodes.stderr
    direct = seg_bag('evaluate-fleet', *bags, tmp_path / 'direct', *fitted, '--batch-size', 1)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    through_nodes, directly = (json.loads((tmp_path / name / 'report.json').read_text())
                               for name in ('nodes', 'direct'))
    assert through_nodes['errors'] == [] and through_nodes['overall']['frames'] == 5
    assert through_nodes['overall']['miou'] > 0.2  # a network that has seen these frames
    agreement = np.trace(np.array(through_nodes['overall']['confusion'])[:, :-1]) / \
        np.trace(np.array(directly['overall']['confusion'])[:, :-1])
    assert agreement == pytest.approx(1.0, abs=1e-3)
    assert through_nodes['overall']['miou'] == pytest.approx(directly['overall']['miou'], abs=1e-3)


@pytest.mark.slow
@needs_camvid
def test_ray_data_over_frames_gives_the_same_matrix_as_a_task_per_bag(drives):
    """The alternative ``benchmark fleet`` times against evaluate-fleet scores the same."""
    from seg_perception.tools.benchmarks.fleet_ray_data import ray_data_confusion

    model = FleetModel(tasks=('semantic',), overrides=overrides(SMALL_SEMANTIC))
    bags = [drives / 'drive_0.bag', drives / 'drive_2.bag']
    matrix, frames = ray_data_confusion(bags, model, workers=2)
    predictor = Predictor(model)
    per_bag = sum(np.array(evaluate_bag(bag, model, predictor)['cameras']['/camera/image_raw']['confusion'])
                  for bag in bags)
    assert frames == 6
    np.testing.assert_array_equal(matrix, per_bag)


def test_the_fleet_starts_the_panoptic_node_only_through_the_nodes():
    """--panoptic with --through-nodes: the fusion node beside both nodes, its output awaited and
    recorded (the replay path test_rosbag_evaluation runs with --panoptic); directly it is refused."""
    from seg_perception.evaluation.fleet_worker import FleetModel
    from seg_perception.messages.topics import camera_bag_topics

    with pytest.raises(ValueError, match='with --through-nodes'):
        FleetModel(panoptic=True)
    model = FleetModel(through_nodes=True, panoptic=True)
    commands, outputs = model.pipeline_commands([camera_bag_topics('/camera/image_raw')])
    assert len(commands) == 3 and 'seg_perception.nodes.panoptic_segmentation' in commands[2]
    assert outputs == ['segmentation/semantic', 'segmentation/instances', 'segmentation/panoptic']
    assert model.cache_key()['panoptic'] and not FleetModel(through_nodes=True).cache_key()['panoptic']
