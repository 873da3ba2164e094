"""A YOLO11n-seg exported by Ultralytics' own exporter, run by our instance segmenter and node,
against Ultralytics' own ``predict`` on the same ONNX file and real frames: the same detections,
boxes within IoU 0.99, masks (Ultralytics' ``retina_masks``, at the camera's resolution) within IoU
0.95 for boxes of 32x32 pixels or more and a median of 0.97. On the evaluation path: a bag of real
frames with instance ground truth replayed through the node (``seg_bag replay``), its answers the
segmenter's and scored (``seg_bag evaluate``, ``evaluate-fleet``) as the segmenter's own results.
Ultralytics is a test-only dependency (test/fitted_yolo.py); skipped where it or ../shared is missing."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from fitted_yolo import MIN_COMPONENT_PIXELS, export_yolo_onnx, fitted_yolo, ultralytics_offline
from shared_data import CAMVID_IMAGES, REPO_ROOT, SHARED_DATA, driving_frames
from seg_models.configs import InstanceFilter, InstanceModelConfig, build_config
from seg_models.segmenters.instance import create_instance_segmenter

pytest.importorskip('ultralytics', reason='Ultralytics (test only) is not installed')
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (SHARED_DATA / 'camvid_seq05vd').is_dir(),
                                                   reason='../shared/data (the frames compared on) is not here')]

EXPORT_SIZES = {'square': (320, 320), 'non-square': (256, 320)}
FRAMES = 6
NMS_IOU = 0.7  # Ultralytics' default, and the metadata's
MIN_MASK_BOX = 32


@pytest.fixture(scope='session')
def yolo_model():
    """yolo11n-seg built from its YAML with the fitted weights kept in test/data (fitted_yolo.py)."""
    return fitted_yolo()


@pytest.fixture(scope='session', params=list(EXPORT_SIZES))
def yolo_export(request, yolo_model, tmp_path_factory):
    """(metadata path, input size) of one Ultralytics ONNX export."""
    size = EXPORT_SIZES[request.param]
    return export_yolo_onnx(yolo_model, size, tmp_path_factory.mktemp(f'yolo_{request.param}')), size


def threshold_between_scores(scores: np.ndarray, wanted: int) -> float:
    """A score threshold keeping between ``wanted`` / 2 and 2 ``wanted`` detections, halfway across the
    widest gap between neighbouring scores there, so that float differences between the two
    implementations cannot put a detection on either side."""
    ordered = np.sort(scores)[::-1]
    positions = range(max(wanted // 2, 1) - 1, min(2 * wanted, len(ordered) - 1))
    k = max(positions, key=lambda position: ordered[position] - ordered[position + 1])
    return float((ordered[k] + ordered[k + 1]) / 2)


def ultralytics_predict(metadata_path, size, frame: np.ndarray, conf: float):
    ultralytics_offline()
    from ultralytics import YOLO

    model = YOLO(str(metadata_path.with_suffix('.onnx')), task='segment')
    return model.predict(np.ascontiguousarray(frame[:, :, ::-1]), imgsz=list(size), conf=conf, iou=NMS_IOU,
                         retina_masks=True, max_det=300, verbose=False)[0]


def test_our_segmenter_agrees_with_ultralytics_predict_on_real_frames(yolo_export):
    metadata_path, size = yolo_export
    frames = driving_frames(FRAMES)  # CamVid Seq05VD, 480x360: never trained on
    everything = [ultralytics_predict(metadata_path, size, frame, conf=0.001) for frame in frames]
    scores = np.concatenate([result.boxes.conf.numpy() for result in everything])
    assert len(scores) >= 10, f'the fitted model finds {len(scores)} candidates: fit it longer'
    conf = threshold_between_scores(scores, wanted=8 * FRAMES)
    segmenter = create_instance_segmenter(build_config(InstanceModelConfig, dict(
        model_metadata=str(metadata_path), backend='onnxruntime', output_label_set='coco_things',
        output_filter=InstanceFilter(score_threshold=conf, mask_threshold=0.5, max_instances=300))))
    box_ious, mask_ious, count = [], [], 0
    for frame in frames:
        theirs = ultralytics_predict(metadata_path, size, frame, conf)
        ours = segmenter.segment([frame])[0]
        assert len(ours.instances) == len(theirs.boxes)
        count += len(ours.instances)
        if not ours.instances:
            continue
        ious = box_iou(torch.tensor([instance.box for instance in ours.instances]), theirs.boxes.xyxy).numpy()
        matched = ious.argmax(axis=1)
        assert len(set(matched.tolist())) == len(matched)  # one to one
        assert [instance.class_id for instance in ours.instances] == theirs.boxes.cls.numpy()[matched].astype(
            int).tolist()
        np.testing.assert_allclose([instance.score for instance in ours.instances],
                                   theirs.boxes.conf.numpy()[matched], atol=1e-4)
        box_ious += ious.max(axis=1).tolist()
        their_masks = theirs.masks.data.numpy() > 0.5
        for instance, mask, index in zip(ours.instances, ours.full_frame_masks(), matched):
            x1, y1, x2, y2 = instance.box
            if min(x2 - x1, y2 - y1) >= MIN_MASK_BOX:
                union = (mask | their_masks[index]).sum()
                mask_ious.append((mask & their_masks[index]).sum() / union if union else 1.0)
    print(f'{count} detections above {conf:.4f} on {FRAMES} frames at {size}: box IoU min {min(box_ious):.4f}; '
          f'{len(mask_ious)} masks of boxes >= {MIN_MASK_BOX} px: IoU min {min(mask_ious):.4f}, median '
          f'{np.median(mask_ious):.4f}')
    assert count >= FRAMES and min(box_ious) >= 0.99
    assert mask_ious and min(mask_ious) >= 0.95 and np.median(mask_ious) >= 0.97


@pytest.mark.ros
@pytest.mark.parametrize('yolo_export', ['non-square'], indirect=True)  # the replay below runs the square one
def test_the_instance_node_publishes_what_the_segmenter_finds_with_the_export(yolo_export, tmp_path_factory):
    """``model_metadata:=`` on the instance node: the Ultralytics export, COCO classes published as
    Cityscapes things, the message equal to the segmenter's result."""
    from std_msgs.msg import Header

    from seg_perception.messages.images import array_to_image_msg
    from test_instance_node import assert_message_equals_result, instance_node, instance_probe

    metadata_path, _ = yolo_export
    frame = driving_frames(1)[0]
    output_filter = InstanceFilter(score_threshold=0.05, mask_threshold=0.5, max_instances=20)
    expected = create_instance_segmenter(build_config(InstanceModelConfig, dict(
        model_metadata=str(metadata_path), backend='onnxruntime', output_label_set='cityscapes_things',
        output_filter=output_filter))).segment([frame])[0]
    with instance_node(tmp_path_factory, '/yolo', '""', f'model_metadata:={metadata_path}', 'label_set:=coco_things',
                       'output_label_set:=cityscapes_things', 'score_threshold:=0.05', 'max_instances:=20') as node:
        probe = instance_probe('yolo_probe', node, '/yolo')
        try:
            probe.connect(timeout=120)
            msg = probe.result(probe.send(array_to_image_msg(frame, 'rgb8', Header())))
        finally:
            probe.close()
    assert msg.label_set == 'cityscapes_things' and len(msg.instances) > 0
    assert_message_equals_result(msg, expected)


def test_fleet_evaluation_scores_the_export_with_coco_classes_mapped_to_cityscapes(yolo_export, tmp_path):
    """``seg_bag evaluate-fleet`` with the instance node's parameters naming the export: instance AP
    over Cityscapes-layout bags, the model's COCO classes published as Cityscapes things."""
    from dataset_folders import write_cityscapes_folder

    metadata_path, _ = yolo_export
    if metadata_path.stem != 'yolo11n-seg_256x320':
        pytest.skip('one export is enough for the evaluation path')

    def seg_bag(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, '-m', 'seg_perception.evaluation', *map(str, args)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=900)

    made = seg_bag('make', write_cityscapes_folder(tmp_path / 'city', frames=2), tmp_path / 'bags' / 'city')
    assert made.returncode == 0, made.stderr
    evaluated = seg_bag('evaluate-fleet', tmp_path / 'bags', tmp_path / 'report', '--tasks', 'instance',
                        '-p', f'instance_segmentation:model_metadata:={metadata_path}',
                        '-p', 'instance_segmentation:label_set:=coco_things',
                        '-p', 'instance_segmentation:output_label_set:=cityscapes_things',
                        '-p', 'instance_segmentation:score_threshold:=0.05')
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]
    report = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert report['overall']['instances']['frames'] == 2 and 0.0 <= report['overall']['instances']['ap'] <= 1.0
    assert 'untrained' not in (tmp_path / 'report' / 'report.md').read_text().lower()


# CamVid (SegNet's 11 classes, 11 void) -> Cityscapes labelIds, for real frames as a Cityscapes-layout dataset
CITYSCAPES_LABEL_ID_OF_CAMVID = np.array([23, 11, 17, 7, 8, 21, 20, 13, 26, 24, 25, 0], np.uint8)
INSTANCE_LABEL_IDS = (26, 24, 25)  # car, person, rider (CamVid's Bicyclist): one instance per connected component
REPLAYED_FRAMES = (0, 6, 10, 16)  # Seq05VD frames with cars, two with people (f00300, f00480)
MAX_INSTANCES = 100  # config/driving.yaml's, which the replayed node runs with
STOP_SEC = 20


def write_camvid_as_cityscapes(root: Path, indices=REPLAYED_FRAMES) -> Path:
    """Real CamVid Seq05VD frames (never trained on) in Cityscapes' layout: labelIds mapped from
    CamVid's classes, instance ids (labelId * 1000 + index) for each connected component of car,
    person and rider pixels of at least ``MIN_COMPONENT_PIXELS`` (smaller ones: the class alone,
    as Cityscapes marks groups)."""
    images = sorted(CAMVID_IMAGES.glob('*.png'))
    folder_images, folder_truth = root / 'leftImg8bit' / 'val' / 'seq05vd', root / 'gtFine' / 'val' / 'seq05vd'
    folder_images.mkdir(parents=True)
    folder_truth.mkdir(parents=True)
    for number, index in enumerate(indices):
        labels = cv2.imread(str(CAMVID_IMAGES.parent / 'labels' / images[index].name), cv2.IMREAD_UNCHANGED)
        label_ids = CITYSCAPES_LABEL_ID_OF_CAMVID[labels]
        instance_ids = label_ids.astype(np.uint16)
        for label_id in INSTANCE_LABEL_IDS:
            count, components = cv2.connectedComponents((label_ids == label_id).astype(np.uint8))
            sizes = np.bincount(components.ravel(), minlength=count)
            for component in (c for c in range(1, count) if sizes[c] >= MIN_COMPONENT_PIXELS):
                instance_ids[components == component] = label_id * 1000 + component
        stem = f'seq05vd_000000_{number:06d}'
        shutil.copy(images[index], folder_images / f'{stem}_leftImg8bit.png')
        cv2.imwrite(str(folder_truth / f'{stem}_gtFine_labelIds.png'), label_ids)
        cv2.imwrite(str(folder_truth / f'{stem}_gtFine_instanceIds.png'), instance_ids)
    return root


def score_threshold_in_a_gap(scores: np.ndarray, low: float, high: float) -> float:
    """The middle of the widest gap between neighbouring ``scores`` within [``low``, ``high``]: a
    threshold no float difference between two runs of the model can put a detection across."""
    inside = np.sort(np.concatenate([[low, high], scores[(scores > low) & (scores < high)]]))
    widest = int(np.argmax(np.diff(inside)))
    assert inside[widest + 1] - inside[widest] > 1e-3, f'no gap between {low} and {high}: {inside}'
    return float((inside[widest] + inside[widest + 1]) / 2)


def unused_ros_domains(count: int, first: int = 200, last: int = 232) -> list[int]:
    """``count`` ROS domain ids in [``first``, ``last``] that no DDS participant on this machine uses
    now, so that no other test run's nodes meet this test's: Fast DDS binds UDP port 7410 + 250 domain
    + 2 participant of 127.0.0.1 for each participant, and none of the first eight is bound. Above
    the ids test runs take (conftest: 1-100; fleets 100 + worker, 150-199 in test_fleet_evaluation);
    232 is the last id Fast DDS accepts."""
    def unused(domain: int) -> bool:
        for participant in range(8):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(('127.0.0.1', 7410 + 250 * domain + 2 * participant))
                except OSError:
                    return False
        return True

    span = last - first + 1
    candidates = (first + (os.getpid() + offset) % span for offset in range(span))  # runs start apart
    found = [domain for domain in candidates if unused(domain)][:count]
    assert len(found) == count, f'fewer than {count} unused ROS domains in {first}-{last}'
    return found


def seg_bag_in_its_own_group(*args, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``seg_bag ARGS`` in a process group of its own: whatever it starts (nodes, Ray) is stopped with
    it, SIGINT then SIGKILL, also when it outlives ``timeout``."""
    process = subprocess.Popen([sys.executable, '-m', 'seg_perception.evaluation', *map(str, args)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, **(env or {})})
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=STOP_SEC)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f'seg_bag {args[0]} ran past {timeout:.0f} s:\n{stdout[-3000:]}\n{stderr[-3000:]}')
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing of the group outlives it
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.ros
@pytest.mark.parametrize('yolo_export', ['square'], indirect=True)  # the 320x320 export only
def test_a_bag_replayed_through_the_instance_node_with_the_export_records_and_scores_what_the_segmenter_finds(
        yolo_export, tmp_path):
    """``seg_bag replay --start-pipeline`` with the instance node given the export
    (``model_metadata``) on real frames with instance ground truth: every replayed frame is answered
    (back-pressure), each answer holding the segmenter's own detections on that frame (the same
    classes in the same order, scores within 1e-4, boxes within a pixel, masks within IoU 0.98);
    ``seg_bag evaluate`` scores them as the official instance evaluation scores the segmenter's own
    results (AP, per class, the COCO classes published as Cityscapes things); ``evaluate-fleet
    --through-nodes`` gives the same AP.

    The score threshold stays below the tracker's low score (track_low_score, 0.1): the tracking
    node (tracking is on by default) may also publish detections between the two that continue a
    track, which the segmenter alone does not give."""
    from seg_perception.evaluation.bag_io import read_messages
    from seg_perception.evaluation.report import percent
    from seg_perception.messages.images import image_msg_to_rgb, output_msg_to_array
    from seg_perception.messages.instances import instances_from_msg
    from seg_models.bench.metrics import CityscapesFiles
    from seg_models.data.labels import cityscapes_things

    metadata_path, _ = yolo_export
    bag, result_bag, report = tmp_path / 'seq05vd.bag', tmp_path / 'result.bag', tmp_path / 'report'
    made = seg_bag_in_its_own_group('make', write_camvid_as_cityscapes(tmp_path / 'seq05vd'), bag, timeout=120)
    assert made.returncode == 0, made.stderr
    frames = {(msg.header.stamp.sec, msg.header.stamp.nanosec): image_msg_to_rgb(msg)
              for _, _, msg in read_messages(bag, ['/camera/image_raw'])}
    truth = {(msg.header.stamp.sec, msg.header.stamp.nanosec): output_msg_to_array(msg)
             for _, _, msg in read_messages(bag, ['/ground_truth/instances'])}
    assert len(frames) == len(truth) == len(REPLAYED_FRAMES)

    def segmenter(score_threshold: float):
        return create_instance_segmenter(build_config(InstanceModelConfig, dict(
            model_metadata=str(metadata_path), backend='onnxruntime', output_label_set='cityscapes_things',
            output_filter=InstanceFilter(score_threshold=score_threshold, mask_threshold=0.5,
                                         max_instances=MAX_INSTANCES))))

    candidates = np.concatenate([[i.score for i in result.instances]
                                 for result in segmenter(0.01).segment(list(frames.values()))])
    threshold = score_threshold_in_a_gap(candidates, 0.03, 0.054)  # the people found score 0.055 up
    expected = dict(zip(frames, segmenter(threshold).segment(list(frames.values()))))

    node_parameters = [f'instance_segmentation:model_metadata:={metadata_path}',
                       'instance_segmentation:label_set:=coco_things',
                       'instance_segmentation:output_label_set:=cityscapes_things',
                       f'instance_segmentation:score_threshold:={threshold}',
                       'instance_segmentation:backend:=onnxruntime']  # as the segmenter compared with
    replay_domain, fleet_domain = unused_ros_domains(2)  # no other run's nodes answer, or report, here
    started = time.perf_counter()
    replayed = seg_bag_in_its_own_group('replay', bag, result_bag, '--start-pipeline', '--tasks',
                                        'instance', '--startup-timeout', 120, '--frame-timeout', 60,
                                        *[arg for parameter in node_parameters for arg in ('-p', parameter)],
                                        timeout=300, env={'ROS_DOMAIN_ID': str(replay_domain)})
    replay_sec = time.perf_counter() - started
    assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
    # back-pressure: each frame waits for the node's answer, so every frame has one, in the same stamp
    assert (f'{len(frames)} frames replayed (back-pressure); frames without output: /segmentation/instances: 0'
            in replayed.stdout), replayed.stdout
    answers = {(msg.header.stamp.sec, msg.header.stamp.nanosec): msg
               for _, _, msg in read_messages(result_bag, ['/segmentation/instances'])}
    assert answers.keys() == frames.keys()
    detections, classes = 0, set()
    for key, msg in answers.items():
        ours, published = expected[key], instances_from_msg(msg)
        assert msg.label_set == 'cityscapes_things' and published.image_size == ours.image_size
        assert [(i.class_id, i.class_name) for i in published.instances] == [(i.class_id, i.class_name)
                                                                            for i in ours.instances]
        np.testing.assert_allclose([i.score for i in published.instances], [i.score for i in ours.instances],
                                   atol=1e-4)
        np.testing.assert_allclose([i.roi for i in published.instances], [i.roi for i in ours.instances], atol=1)
        for mask, own in zip(published.full_frame_masks(), ours.full_frame_masks()):
            assert (mask & own).sum() >= 0.98 * (mask | own).sum()
        detections += len(ours.instances)
        classes |= {i.class_name for i in ours.instances}
    assert detections >= 2 * len(frames) and {'car', 'person'} <= classes

    # The official instance evaluation of the segmenter's own results on the bag's ground truth
    files = CityscapesFiles(tmp_path / 'direct')
    for key, result in expected.items():
        name = f'frame_{key[0]}_{key[1]:09d}'
        files.add_ground_truth(name, instance_ids=truth[key])
        files.add_instances(name, result, cityscapes_things())
    direct = files.instance_scores()

    evaluated = seg_bag_in_its_own_group('evaluate', result_bag, report, timeout=180)
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    results = json.loads((report / 'report.json').read_text())
    status = results['nodes']['instance_segmentation: inference']  # the node's last /diagnostics, recorded
    assert (status['model'], status['trained weights']) == (str(metadata_path), 'true')
    scores = results['instances_cityscapes_official']
    assert f'AP {100 * scores["ap"]:.1f}%' in evaluated.stdout
    assert scores['frames'] == len(frames) and math.isfinite(scores['ap']) and 0.0 < scores['ap'] <= 1.0
    predicted = {name: scores['per_class'][name]['ap'] for name in sorted(classes)}
    assert all(ap is not None and math.isfinite(ap) and 0.0 <= ap <= 1.0 for ap in predicted.values()), predicted
    assert predicted['car'] > 0.0
    report_text = (report / 'report.md').read_text()  # per class, with the headline's AP
    assert all(f'| {name} | {percent(ap)} |' in report_text for name, ap in predicted.items()), report_text
    assert scores['ap'] == pytest.approx(direct['ap'], abs=1e-3) and scores['ap50'] == pytest.approx(
        direct['ap50'], abs=1e-3)
    for name in predicted:
        assert scores['per_class'][name]['ap'] == pytest.approx(direct['per_class'][name]['ap'], abs=1e-3)

    # The same bag through the nodes on a Ray worker (on the domain id given): the same AP
    started_fleet = time.perf_counter()
    fleet = seg_bag_in_its_own_group('evaluate-fleet', bag, tmp_path / 'fleet', '--through-nodes', '--tasks',
                                     'instance', '--workers', 1, '--domain-id-base', fleet_domain,
                                     *[arg for parameter in node_parameters for arg in ('-p', parameter)],
                                     timeout=300)
    fleet_sec = time.perf_counter() - started_fleet
    assert fleet.returncode == 0, fleet.stdout[-3000:] + fleet.stderr[-3000:]
    fleet_report = json.loads((tmp_path / 'fleet' / 'report.json').read_text())
    assert fleet_report['errors'] == [] and fleet_report['overall']['instances']['frames'] == len(frames)
    assert fleet_report['overall']['instances']['ap'] == pytest.approx(scores['ap'], abs=1e-3)
    print(f'{len(frames)} frames, {detections} detections ({", ".join(sorted(classes))}) above {threshold:.4f}; '
          f'AP {scores["ap"]:.4f}, AP50 {scores["ap50"]:.4f}, per class {predicted}; directly AP {direct["ap"]:.4f}; '
          f'fleet through the nodes AP {fleet_report["overall"]["instances"]["ap"]:.4f}; replay {replay_sec:.0f} s, '
          f'fleet {fleet_sec:.0f} s')
