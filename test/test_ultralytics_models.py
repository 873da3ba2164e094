"""A YOLO11n-seg exported by Ultralytics' own exporter, run by our instance segmenter and node,
against Ultralytics' own ``predict`` on the same ONNX file and real frames: the same detections,
boxes within IoU 0.99, masks (Ultralytics' ``retina_masks``, at the camera's resolution) within IoU
0.95 for boxes of 32x32 pixels or more and a median of 0.97. Ultralytics is a test-only dependency
(test/fitted_yolo.py); skipped where it or ../shared is missing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from fitted_yolo import export_yolo_onnx, fitted_yolo, ultralytics_offline
from shared_data import SHARED_DATA, driving_frames
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
    import json
    import subprocess
    import sys

    from dataset_folders import write_cityscapes_folder
    from shared_data import REPO_ROOT

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
