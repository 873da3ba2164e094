"""Datasets to bags, replay through real nodes over DDS, official metrics and the report.

Bags are real rosbag2 folders written with rosbags; replays run the real nodes (or the
ground-truth echo node, a perfect predictor) in their own processes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from std_msgs.msg import Header, String

from dataset_folders import write_cityscapes_folder
from ros_helpers import CAMVID_IMAGES, REPO_ROOT, NodeProcess
from seg_models.segmenters.instance_postprocess import InstanceResult
from seg_models.data.labels import (LabelClass, LabelSet, cityscapes, cityscapes_label_id_to_train_id,
                                    cityscapes_things, get_label_set)
from seg_perception.evaluation.bag_io import BagWriter, bag_topics, read_messages
from seg_models.data.datasets import GroundTruthInfo
from seg_perception.evaluation.evaluate import evaluate
from seg_perception.evaluation.ground_truth import instances_of
from seg_models.bench.metrics import CityscapesFiles, confusion_matrix, scores_from_confusion
from seg_models.data.frame_sources import synthetic_frames
from seg_perception.messages.images import array_to_image_msg, output_msg_to_array
from seg_perception.messages.label_info import label_set_to_msg

pytestmark = pytest.mark.ros

CAMVID_ROOT = CAMVID_IMAGES.parent
FRAMES = 4


def seg_bag(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'seg_perception.evaluation', *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def camvid_folder(tmp_path_factory) -> Path:
    """../shared's CamVid frames and labels where present, else generated frames with labels
    (sky above the horizon, road below, in CamVid ids)."""
    if (CAMVID_ROOT / 'labels').is_dir():
        return CAMVID_ROOT
    root = tmp_path_factory.mktemp('camvid')
    (root / 'images').mkdir()
    (root / 'labels').mkdir()
    for frame in synthetic_frames(FRAMES, width=480, height=360):
        cv2.imwrite(str(root / 'images' / f'{frame.name}.png'), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
        labels = np.full((360, 480), 3, np.uint8)
        labels[:144] = 0
        cv2.imwrite(str(root / 'labels' / f'{frame.name}.png'), labels)
    return root


@pytest.fixture(scope='module')
def cityscapes_folder(tmp_path_factory) -> Path:
    return write_cityscapes_folder(tmp_path_factory.mktemp('cityscapes'))


@pytest.mark.parametrize('storage, compression', [('mcap', 'none'), ('sqlite3', 'png')])
def test_make_bag_stamps_camera_camera_info_and_ground_truth_alike(tmp_path, cityscapes_folder, storage,
                                                                     compression):
    bag = tmp_path / 'city.bag'
    result = seg_bag('make', cityscapes_folder, bag, '--storage', storage, '--compression', compression)
    assert result.returncode == 0, result.stderr
    camera = '/camera/image_raw' + ('/compressed' if compression != 'none' else '')
    topics = bag_topics(bag)
    assert {topic: count for topic, (_, count) in topics.items()} == {
        camera: 3, '/camera/camera_info': 3, '/ground_truth/semantic': 3, '/ground_truth/instances': 3,
        '/ground_truth/info': 1}
    stamps: dict[str, list] = {}
    ground_truth = {}
    for topic, bag_time, msg in read_messages(bag):
        if topic == '/ground_truth/info':
            assert GroundTruthInfo.from_json(msg.data) == GroundTruthInfo('cityscapes', 'cityscapes_label_ids', True,
                                                                          True)
            continue
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert stamp_ns == bag_time
        stamps.setdefault(topic, []).append(stamp_ns)
        if topic == '/ground_truth/instances':
            ground_truth[stamp_ns] = output_msg_to_array(msg)
    assert len({tuple(values) for values in stamps.values()}) == 1  # every topic: the same stamps
    assert np.diff(stamps[camera]).tolist() == [100_000_000] * 2  # 10 Hz
    first = sorted(ground_truth)[0]
    expected = cv2.imread(str(cityscapes_folder / 'gtFine/val/testcity/testcity_000000_000000_gtFine_instanceIds.png'),
                          cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ground_truth[first], expected)


def test_replay_through_the_real_nodes_accounts_for_every_frame(tmp_path, camvid_folder):
    bag, result_bag, report = tmp_path / 'camvid.bag', tmp_path / 'result.bag', tmp_path / 'report'
    assert seg_bag('make', camvid_folder, bag, '--max-frames', FRAMES).returncode == 0
    replayed = seg_bag('replay', bag, result_bag, '--start-pipeline', '-p', 'input_height:=64',
                       '-p', 'input_width:=128')
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f'{FRAMES} frames replayed (back-pressure)' in replayed.stdout
    evaluated = seg_bag('evaluate', result_bag, report)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((report / 'report.json').read_text())
    assert results['frames']['replayed'] == FRAMES
    for topic in ('/segmentation/semantic', '/segmentation/instances'):
        assert results['frames'][topic] == {'with_output': FRAMES, 'without_output': 0}
        assert results['latency'][topic]['count'] == FRAMES and results['latency'][topic]['p50_ms'] > 0
    assert results['semantic']['frames'] == FRAMES and results['semantic']['label_set'] == 'camvid'
    void = sum(int((cv2.imread(str(path), cv2.IMREAD_UNCHANGED) == 11).sum())
               for path in sorted((camvid_folder / 'labels').iterdir())[:FRAMES])
    assert np.asarray(results['confusion_matrix']['matrix']).sum() == FRAMES * 360 * 480 - void
    assert set(results['nodes']) == {f'{node}: {status}' for node in ('semantic_segmentation', 'instance_segmentation')
                                     for status in ('camera pipeline', 'inference')}
    for name in ('report.md', 'per_class_iou.png', 'confusion_matrix.png', 'latency_histogram.png'):
        assert (report / name).stat().st_size > 0
    assert len(list((report / 'frames').glob('*.png'))) == 3
    assert 'camera frame published by the replay -> output received' in (report / 'report.md').read_text()
    # The nodes ran on the bag's /clock (use_sim_time): "now" was each frame's own stamp when they
    # published it, so their stamp-to-output latency is 0 (on the system clock it would be ~2e12 ms).
    timings = [msg for _, _, msg in read_messages(result_bag, ['/semantic_segmentation/processing_time'])]
    assert len(timings) == FRAMES and all(abs(timing.latency_ms) < 1.0 for timing in timings)


def test_perfect_predictor_scores_100_percent_miou_and_ap_1(tmp_path, cityscapes_folder, camvid_folder):
    """The ground truth echoed as predictions through the same replay path: stamps, label ids (trainId
    -> labelId for the official evaluation) and masks all line up, or this is below 100%."""
    for name, folder in (('cityscapes', cityscapes_folder), ('camvid', camvid_folder)):
        bag, result_bag = tmp_path / f'{name}.bag', tmp_path / f'{name}_result.bag'
        assert seg_bag('make', folder, bag, '--max-frames', FRAMES).returncode == 0
        with NodeProcess('seg_perception.evaluation.ground_truth_echo',
                         ['-p', f'bag:={bag}', '-r', 'image:=/camera/image_raw'], tmp_path / f'{name}.log') as echo:
            replayed = seg_bag('replay', bag, result_bag, '--startup-timeout', 120)
            assert replayed.returncode == 0, replayed.stderr + echo.output()
        results, _ = evaluate(result_bag)
        assert results['semantic']['miou'] == 1.0 and results['semantic']['pixel_accuracy'] == 1.0
        if name == 'cityscapes':
            official = results['semantic_cityscapes_official']
            assert official['miou'] == pytest.approx(1.0) and official['iiou'] == pytest.approx(1.0)
            instances = results['instances_cityscapes_official']
            assert instances['frames'] == 3 and instances['ap'] == pytest.approx(1.0)
            assert instances['ap50'] == pytest.approx(1.0)
            assert instances['per_class']['car']['ap'] == pytest.approx(1.0)


def test_a_two_camera_bag_replays_through_one_node_per_task_and_evaluates_per_camera(tmp_path, cityscapes_folder):
    """Two cameras (one source each) in one bag: replay finds both and starts nodes serving both;
    evaluate reports each camera and all of them; the perfect predictor scores 100% on each."""
    bag, result_bag, report = tmp_path / 'two.bag', tmp_path / 'two_result.bag', tmp_path / 'report'
    cameras = ['/front/image_raw', '/rear/image_raw']
    made = seg_bag('make', cityscapes_folder, cityscapes_folder, bag, '--max-frames', 2,
                   *[arg for camera in cameras for arg in ('--camera-topic', camera)])
    assert made.returncode == 0, made.stderr
    topics = bag_topics(bag)
    for namespace in ('/front', '/rear'):
        for topic in ('image_raw', 'camera_info', 'ground_truth/semantic', 'ground_truth/instances'):
            assert topics[f'{namespace}/{topic}'][1] == 2, topics
    replayed = seg_bag('replay', bag, result_bag, '--start-pipeline', '--panoptic', '-p', 'input_height:=64',
                       '-p', 'input_width:=128')
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert '4 frames replayed (back-pressure)' in replayed.stdout
    recorded = bag_topics(result_bag)  # --panoptic: the fusion node answered every frame of both cameras
    assert all(recorded[f'{namespace}/segmentation/panoptic'][1] == 2 for namespace in ('/front', '/rear'))
    evaluated = seg_bag('evaluate', result_bag, report)
    assert evaluated.returncode == 0, evaluated.stderr
    assert '4 frames from 2 cameras' in evaluated.stdout and 'PQ ' in evaluated.stdout
    results = json.loads((report / 'report.json').read_text())
    assert results['panoptic']['frames'] == 4 and 'recorded' in results['panoptic']['source']
    assert set(results['cameras']) == set(cameras)
    for camera, namespace in zip(cameras, ('/front', '/rear')):
        per_camera = results['cameras'][camera]
        assert per_camera['frames']['replayed'] == 2 and per_camera['semantic']['frames'] == 2
        for output in ('segmentation/semantic', 'segmentation/instances'):
            assert per_camera['frames'][f'{namespace}/{output}'] == {'with_output': 2, 'without_output': 0}
            assert results['latency'][f'{namespace}/{output}']['count'] == 2
        assert per_camera['semantic_cityscapes_official']['miou'] >= 0
    overall = np.asarray(results['confusion_matrix']['matrix'])
    assert overall.sum() == sum(np.asarray(results['cameras'][camera]['confusion_matrix']['matrix']).sum()
                                for camera in cameras)
    assert results['semantic']['frames'] == 4 and results['instances_cityscapes_official']['frames'] == 4
    assert {'semantic_segmentation: camera pipeline (/front/image_raw)',
            'instance_segmentation: camera pipeline (/rear/image_raw)'} <= set(results['nodes'])
    assert '## Per camera' in (report / 'report.md').read_text()
    # The perfect predictor, answering each camera in its namespace: 100% on each and overall.
    echo_result = tmp_path / 'echo_result.bag'
    with NodeProcess('seg_perception.evaluation.ground_truth_echo',
                     ['-p', f'bag:={bag}', '-p', f'cameras:=[{", ".join(cameras)}]'], tmp_path / 'echo.log') as echo:
        replayed = seg_bag('replay', bag, echo_result, '--startup-timeout', 120)
        assert replayed.returncode == 0, replayed.stderr + echo.output()
    results, _ = evaluate(echo_result)
    for scores in [results] + list(results['cameras'].values()):
        assert scores['semantic']['miou'] == 1.0
        assert scores['semantic_cityscapes_official']['miou'] == pytest.approx(1.0)
        assert scores['instances_cityscapes_official']['ap'] == pytest.approx(1.0)


def test_recorded_rate_replay_paces_frames_by_their_stamps(tmp_path, camvid_folder):
    bag, result_bag = tmp_path / 'camvid.bag', tmp_path / 'result.bag'
    assert seg_bag('make', camvid_folder, bag, '--max-frames', FRAMES, '--rate', 10).returncode == 0
    with NodeProcess('seg_perception.evaluation.ground_truth_echo',
                     ['-p', f'bag:={bag}', '-r', 'image:=/camera/image_raw'], tmp_path / 'echo.log') as echo:
        replayed = seg_bag('replay', bag, result_bag, '--rate', 0.5, '--startup-timeout', 120)
        assert replayed.returncode == 0, replayed.stderr + echo.output()
    assert f'{FRAMES} frames replayed (0.5x recorded rate); frames without output: /segmentation/semantic: 0' \
        in replayed.stdout
    sent_ms = np.array([bag_time for _, bag_time, _ in read_messages(result_bag, ['/camera/image_raw'])]) / 1e6
    # 10 Hz stamps at half the rate: frame k is due 200 k ms after the first. Replay never sends a frame early,
    # and a late one does not delay the next (each is due from the first), so only the upper bound has slack.
    since_first = sent_ms - sent_ms[0]
    assert np.all(since_first >= 200 * np.arange(FRAMES) - 1), since_first
    assert since_first[-1] < 1.5 * 200 * (FRAMES - 1), since_first


def test_a_video_becomes_a_bag_without_ground_truth(tmp_path):
    video = tmp_path / 'drive.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (320, 180))
    for frame in synthetic_frames(5, width=320, height=180):
        writer.write(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    result = seg_bag('make', video, tmp_path / 'drive.bag', '--max-frames', 3)
    assert result.returncode == 0, result.stderr
    topics = bag_topics(tmp_path / 'drive.bag')
    assert {topic: count for topic, (_, count) in topics.items()} == {
        '/camera/image_raw': 3, '/camera/camera_info': 3, '/ground_truth/info': 1}
    info = [msg for _, _, msg in read_messages(tmp_path / 'drive.bag', ['/ground_truth/info'])][0]
    assert GroundTruthInfo.from_json(info.data) == GroundTruthInfo('video', '', False, False)


def test_official_and_independent_semantic_metrics_agree_on_imperfect_predictions(tmp_path, cityscapes_folder):
    """cityscapesscripts' official per-class IoU equals our confusion matrix's and a direct
    set-based computation here, on predictions with errors in them."""
    rng = np.random.default_rng(1)
    to_train = cityscapes_label_id_to_train_id()
    files = CityscapesFiles(tmp_path / 'files')
    total = np.zeros((19, 20), np.int64)
    pairs = []
    for path in sorted((cityscapes_folder / 'gtFine/val/testcity').glob('*_labelIds.png')):
        label_ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        truth = to_train[label_ids]
        prediction = truth.copy()
        prediction[rng.random(truth.shape) < 0.2] = 0  # 20% of the pixels called road
        prediction[100:140, 200:300] = 13  # a false car
        name = path.name[:-len('_gtFine_labelIds.png')]
        instances = cv2.imread(str(path).replace('labelIds', 'instanceIds'), cv2.IMREAD_UNCHANGED)
        files.add_ground_truth(name, label_ids, instances)
        files.add_semantic(name, prediction)
        total += confusion_matrix(truth, prediction, 19)
        pairs.append((truth, prediction))
    official = files.semantic_scores()
    ours = scores_from_confusion(total, cityscapes().names)
    for class_id, name in enumerate(cityscapes().names):
        truth_pixels = sum(int((truth == class_id).sum()) for truth, _ in pairs)
        predicted = sum(int(((prediction == class_id) & (truth != 255)).sum()) for truth, prediction in pairs)
        if truth_pixels == 0 and predicted == 0:
            assert ours['per_class_iou'][name] is None
            continue
        intersection = sum(int(((truth == class_id) & (prediction == class_id)).sum()) for truth, prediction in pairs)
        direct = intersection / (truth_pixels + predicted - intersection)
        assert ours['per_class_iou'][name] == pytest.approx(direct)
        assert official['per_class_iou'][name] == pytest.approx(direct)
    assert official['miou'] == pytest.approx(ours['miou'])
    assert 0.2 < ours['miou'] < 0.95


def test_instance_ap_falls_when_instances_are_missed(tmp_path, cityscapes_folder):
    files = CityscapesFiles(tmp_path / 'files')
    for path in sorted((cityscapes_folder / 'gtFine/val/testcity').glob('*_instanceIds.png')):
        truth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        found = instances_of(truth, cityscapes_things())
        cars = [instance for instance in found.instances if instance.class_name == 'car']
        kept = InstanceResult(found.image_size, [instance for instance in found.instances if instance is not cars[0]])
        name = path.name[:-len('_gtFine_instanceIds.png')]
        files.add_ground_truth(name, instance_ids=truth)
        files.add_instances(name, kept, cityscapes_things())
    scores = files.instance_scores()
    assert scores['per_class']['person']['ap'] == pytest.approx(1.0)
    assert scores['per_class']['car']['ap'] == pytest.approx(2 / 3, abs=0.02)  # one car of three missed per frame


def _result_bag(path: Path, prediction_label_set, ground_truth: bool = True, labels=None, prediction=None,
                id_space: str = 'camvid') -> Path:
    """A result bag as replay writes one: ground truth (CamVid road by default), a camera frame and a
    prediction (the ground truth itself by default) in ``prediction_label_set`` (a name or a LabelSet)."""
    header = Header(stamp=Time(sec=5), frame_id='camera')
    labels = np.full((8, 10), 3, np.uint8) if labels is None else labels
    prediction = labels if prediction is None else prediction
    if isinstance(prediction_label_set, str):
        prediction_label_set = get_label_set(prediction_label_set)
    with BagWriter(path) as bag:
        if ground_truth:
            bag.write('/ground_truth/info', String(data=GroundTruthInfo('folder', id_space, True, False).to_json()), 1)
            bag.write('/ground_truth/semantic', array_to_image_msg(labels, 'mono8', header), 2)
        bag.write('/camera/image_raw', array_to_image_msg(np.zeros((*labels.shape, 3), np.uint8), 'rgb8', header), 3)
        bag.write('/segmentation/semantic/label_info', label_set_to_msg(prediction_label_set), 4)
        bag.write('/segmentation/semantic', array_to_image_msg(prediction, 'mono8', header), 5)
    return path


def test_cityscapes_predictions_are_mapped_onto_camvid_and_unknown_pairs_are_refused(tmp_path):
    results, _ = evaluate(_result_bag(tmp_path / 'mapped.bag', 'cityscapes'))
    assert results['semantic']['label_set'] == 'camvid'  # Cityscapes id 3 (wall) is CamVid Building
    assert results['semantic']['per_class_iou']['Road'] == 0.0
    with pytest.raises(ValueError, match="mismatched label sets: predictions are in 'mapillary_vistas_v1.2', "
                                       "ground truth in 'camvid'"):
        evaluate(_result_bag(tmp_path / 'mismatched.bag', 'mapillary_vistas'))


def test_a_drive_without_ground_truth_gets_latency_and_frame_counts_only(tmp_path):
    results, _ = evaluate(_result_bag(tmp_path / 'drive.bag', 'cityscapes', ground_truth=False))
    assert 'semantic' not in results and results['frames']['/segmentation/semantic']['with_output'] == 1
    assert results['latency']['/segmentation/semantic']['p50_ms'] == pytest.approx(2e-6)  # 5 ns - 3 ns


def test_missing_topics_and_empty_bags_are_clear_errors(tmp_path, camvid_folder):
    bag = tmp_path / 'camvid.bag'
    assert seg_bag('make', camvid_folder, bag, '--max-frames', 1).returncode == 0
    result = seg_bag('replay', bag, tmp_path / 'out.bag', '--camera-topic', '/front/image_raw', '--startup-timeout', 5)
    assert result.returncode == 1
    assert 'has no camera topic /front/image_raw' in result.stderr
    assert '/camera/image_raw (sensor_msgs/msg/Image, 1 messages)' in result.stderr  # what the bag has
    empty = tmp_path / 'empty.bag'
    with BagWriter(empty):
        pass
    for command in (('replay', empty, tmp_path / 'out2.bag', '--startup-timeout', 5),
                    ('evaluate', empty, tmp_path / 'report')):
        result = seg_bag(*command)
        assert result.returncode == 1 and f'bag {empty} holds no messages' in result.stderr
    result = seg_bag('evaluate', bag, tmp_path / 'report')  # a dataset bag, not a result bag
    assert result.returncode == 1 and 'lacks /segmentation/semantic or /segmentation/instances' in result.stderr
    result = seg_bag('make', tmp_path / 'nothing_here', tmp_path / 'x.bag')
    assert result.returncode == 1 and 'is not a Cityscapes folder' in result.stderr


# --- evaluation's sharp edges (issue 16) ---------------------------------------------------------------

def _label_folder(root: Path, labels: list[np.ndarray]) -> Path:
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    for index, label in enumerate(labels):
        cv2.imwrite(str(root / 'images' / f'{index:03d}.png'), np.zeros((*label.shape, 3), np.uint8))
        cv2.imwrite(str(root / 'labels' / f'{index:03d}.png'), label)
    return root


def test_a_folder_without_labels_is_made_without_ground_truth(tmp_path):
    root = _label_folder(tmp_path / 'drive', [np.zeros((8, 10), np.uint8)])
    for label in (root / 'labels').iterdir():
        label.unlink()
    (root / 'labels').rmdir()
    made = seg_bag('make', root, tmp_path / 'drive.bag')
    assert made.returncode == 0, made.stderr
    assert '(ground truth: none)' in made.stdout
    info = [msg for _, _, msg in read_messages(tmp_path / 'drive.bag', ['/ground_truth/info'])][0]
    assert GroundTruthInfo.from_json(info.data) == GroundTruthInfo('folder', '', False, False)


def test_labels_outside_the_declared_id_space_are_refused_and_cityscapes_label_ids_can_be_declared(tmp_path):
    label_ids = np.full((16, 20), 7, np.uint8)  # Cityscapes labelIds: road, sky, car
    label_ids[:5], label_ids[10:, :6] = 23, 26
    root = _label_folder(tmp_path / 'cityscapes_ids', [label_ids, label_ids])
    refused = seg_bag('make', root, tmp_path / 'camvid.bag')  # the default: CamVid ids
    assert refused.returncode == 1
    assert 'holds ids 23, 26 that are not in label set camvid (ids 0-10, ignore 11)' in refused.stderr
    assert 'Cityscapes labelIds? --label-set cityscapes_label_ids' in refused.stderr
    as_train_ids = seg_bag('make', root, tmp_path / 'train_ids.bag', '--label-set', 'cityscapes')
    assert as_train_ids.returncode == 1
    assert 'holds ids 23, 26 that are not in label set cityscapes' in as_train_ids.stderr
    made = seg_bag('make', root, tmp_path / 'label_ids.bag', '--label-set', 'cityscapes_label_ids')
    assert made.returncode == 0, made.stderr
    assert '(ground truth: cityscapes_label_ids)' in made.stdout
    # Predictions in Cityscapes train ids score against them: perfect ones 100%.
    perfect = cityscapes_label_id_to_train_id()[label_ids].astype(np.uint8)
    results, _ = evaluate(_result_bag(tmp_path / 'scored.bag', 'cityscapes', labels=label_ids, prediction=perfect,
                                      id_space='cityscapes_label_ids'))
    assert results['semantic']['miou'] == pytest.approx(1.0)
    assert results['semantic_cityscapes_official']['miou'] == pytest.approx(1.0)


def test_a_label_set_with_every_ground_truth_class_is_scored_by_class_name(tmp_path):
    """A user's label set (CamVid's classes after a background class, under another name) against
    CamVid ground truth: matched by class name; background predictions count as unlabeled."""
    camvid = get_label_set('camvid')
    with_background = LabelSet('my_drive_classes', (LabelClass(0, 'background', (0, 0, 0), False),) + tuple(
        dataclasses.replace(label, id=label.id + 1) for label in camvid.classes), ignore_id=255)
    labels = np.full((8, 10), 3, np.uint8)  # Road
    prediction = np.full((8, 10), 4, np.uint8)  # Road in the user's ids
    prediction[:, :5] = 0  # background on half the road
    results, _ = evaluate(_result_bag(tmp_path / 'user.bag', with_background, labels=labels, prediction=prediction))
    assert results['semantic']['label_set'] == 'camvid'
    assert results['semantic']['per_class_iou']['Road'] == pytest.approx(0.5)
    fewer = LabelSet('roads_only', (LabelClass(0, 'Road', (128, 64, 128), False),))
    with pytest.raises(ValueError, match="predictions lack 10 of its classes by name"):
        evaluate(_result_bag(tmp_path / 'fewer.bag', fewer, prediction=np.zeros((8, 10), np.uint8)))


def test_pipeline_commands_start_the_asked_tasks_with_overrides_per_node(tmp_path):
    from seg_perception.evaluation.replay import start_pipeline_commands
    from seg_perception.messages.topics import camera_bag_topics

    cameras = [camera_bag_topics('/camera/image_raw')]
    commands = start_pipeline_commands(tmp_path / 'driving.yaml', cameras, [
        'input_height:=64', 'semantic_segmentation:input_width:=128', 'instance_segmentation:input_width:=256'],
        {}, tasks=['semantic'])
    assert len(commands) == 1 and 'seg_perception.nodes.semantic_segmentation' in commands[0]
    assert {'input_height:=64', 'input_width:=128'} <= set(commands[0]) and 'input_width:=256' not in commands[0]
    both = start_pipeline_commands(tmp_path / 'driving.yaml', cameras, ['instance_segmentation:input_width:=256'], {})
    assert len(both) == 2 and 'input_width:=256' in both[1] and 'input_width:=256' not in both[0]
    with pytest.raises(ValueError, match="names node 'semantic'"):
        start_pipeline_commands(tmp_path / 'driving.yaml', cameras, ['semantic:input_width:=1'], {})
    with pytest.raises(ValueError, match='is not NAME:=VALUE'):
        start_pipeline_commands(tmp_path / 'driving.yaml', cameras, ['input_width=1'], {})
    fused = start_pipeline_commands(tmp_path / 'driving.yaml', cameras, ['panoptic_segmentation:max_pending:=5'],
                                    {'semantic_checkpoint': 'a.pth'}, panoptic=True)
    assert len(fused) == 3 and 'seg_perception.nodes.panoptic_segmentation' in fused[2]
    assert 'max_pending:=5' in fused[2] and 'use_sim_time:=true' in fused[2]
    assert not any(argument.startswith('checkpoint:=') for argument in fused[2])
    with pytest.raises(ValueError, match='replay both tasks'):
        start_pipeline_commands(tmp_path / 'driving.yaml', cameras, [], {}, tasks=['semantic'], panoptic=True)


def test_a_semantic_only_replay_starts_only_the_semantic_node(tmp_path, camvid_folder):
    bag, result_bag, report = tmp_path / 'camvid.bag', tmp_path / 'result.bag', tmp_path / 'report'
    assert seg_bag('make', camvid_folder, bag, '--max-frames', 2).returncode == 0
    replayed = seg_bag('replay', bag, result_bag, '--start-pipeline', '--tasks', 'semantic',
                       '-p', 'semantic_segmentation:input_height:=64', '-p', 'input_width:=128')
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert '2 frames replayed' in replayed.stdout and '/segmentation/instances' not in replayed.stdout
    assert seg_bag('evaluate', result_bag, report).returncode == 0
    results = json.loads((report / 'report.json').read_text())
    assert results['semantic']['frames'] == 2 and '/segmentation/instances' not in results['frames']
    assert set(results['nodes']) == {'semantic_segmentation: camera pipeline', 'semantic_segmentation: inference'}
    # The node's final counts, not those of its last status before the replay ended (a status after the last frame).
    pipeline = results['nodes']['semantic_segmentation: camera pipeline']
    assert pipeline['frames received'] == '2' and pipeline['frames published'] == '2'


def test_ground_truth_of_frames_without_a_prediction_is_let_go(tmp_path):
    """Frames 0-4 have ground truth, the node answered 2 and 4 only: the ground truth of 0, 1 and 3
    is dropped as soon as a later frame's prediction shows theirs will never come, not kept to the end."""
    labels = np.full((8, 10), 3, np.uint8)
    with BagWriter(tmp_path / 'gaps.bag') as bag:
        bag.write('/ground_truth/info', String(data=GroundTruthInfo('folder', 'camvid', True, False).to_json()), 1)
        bag.write('/segmentation/semantic/label_info', label_set_to_msg(get_label_set('camvid')), 2)
        for frame in range(5):
            header, time_ns = Header(stamp=Time(sec=10 + frame), frame_id='camera'), 100 + 10 * frame
            bag.write('/ground_truth/semantic', array_to_image_msg(labels, 'mono8', header), time_ns)
            bag.write('/camera/image_raw', array_to_image_msg(np.zeros((8, 10, 3), np.uint8), 'rgb8', header),
                      time_ns + 1)
            if frame in (2, 4):
                bag.write('/segmentation/semantic', array_to_image_msg(labels, 'mono8', header), time_ns + 5)
    results, evaluations = evaluate(tmp_path / 'gaps.bag')
    assert results['semantic']['frames'] == 2 and results['semantic']['miou'] == pytest.approx(1.0)
    assert evaluations[0].ground_truth == {}
