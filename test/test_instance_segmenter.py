"""Mask R-CNN: torchvision's semantics end to end, ONNX Runtime parity, class mapping, filters."""
import time

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from model_files import torchvision_v1_coco_model
from shared_data import driving_frames
from seg_models.configs import InstanceFilter, InstanceModelConfig, build_config
from seg_models.segmenters.instance import build_instance_network, class_map, create_instance_segmenter
from seg_models.data.labels import cityscapes_things, coco_category_names, get_label_set
from seg_models.models.maskrcnn import mask_rcnn, network_classes_for

pytestmark = pytest.mark.slow

INPUT_SIZE = (256, 512)
# torchvision's own box threshold and our cap: what torchvision's complete model returns, compared with.
KEEP_ALL = InstanceFilter(score_threshold=0.05, max_instances=20)


def config(checkpoint, **overrides):
    settings = dict(checkpoint=str(checkpoint), input_size=INPUT_SIZE, max_detections=20, output_filter=KEEP_ALL,
                    backend='pytorch')
    settings.update(overrides)
    return build_config(InstanceModelConfig, settings)


def test_instances_equal_torchvision_maskrcnn_own_postprocessing(maskrcnn_checkpoint):
    """Same weights through torchvision's complete forward (its transform at scale 1, its paste at
    camera size) and through our graph + host post-processing: same boxes, scores, masks."""
    segmenter = create_instance_segmenter(config(maskrcnn_checkpoint))
    frame = driving_frames(1, size=INPUT_SIZE)[0]
    model = mask_rcnn('maskrcnn_resnet50_fpn', 9, max_detections=20)
    model.load_state_dict(torch.load(maskrcnn_checkpoint, weights_only=True))
    assert_same_instances(segmenter.segment([frame])[0], torchvision_forward(model, frame),
                          class_of_label=lambda label: label - 1)


def torchvision_forward(model, frame: np.ndarray) -> dict:
    """torchvision's complete Mask R-CNN forward on ``frame`` at scale 1 (its transform, its paste)."""
    model.transform.min_size, model.transform.max_size = (INPUT_SIZE[0],), INPUT_SIZE[1]
    with torch.no_grad():
        return model.eval()([torch.from_numpy(frame).permute(2, 0, 1).float() / 255])[0]


def assert_same_instances(result, expected: dict, class_of_label) -> None:
    assert len(result.instances) == len(expected['scores']) > 0
    for instance, box, score, label, mask in zip(result.instances, expected['boxes'], expected['scores'],
                                                 expected['labels'], expected['masks']):
        np.testing.assert_allclose(instance.box, box.numpy(), atol=1e-3)
        assert abs(instance.score - float(score)) < 1e-5 and instance.class_id == class_of_label(int(label))
        x, y, width, height = instance.roi
        np.testing.assert_array_equal(instance.mask, (mask[0] > 0.5)[y:y + height, x:x + width].numpy())


def test_torchvision_v1_coco_file_saved_from_frozen_batch_norm_runs_as_torchvision_runs_it(tmp_path, caplog):
    """The v1 COCO file has no num_batches_tracked and runs with BatchNorm epsilon 0.0: the network
    loaded from it gives torchvision's detections exactly, and it publishes them."""
    source = torchvision_v1_coco_model(seed=1)
    path = tmp_path / 'maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth'
    torch.save(source.state_dict(), path)
    assert not any('num_batches_tracked' in key for key in source.state_dict())
    caplog.set_level('INFO')
    coco_config = config(path, label_set='coco_things')
    network, _ = build_instance_network(coco_config, network_classes_for(get_label_set('coco_things')))
    assert 'backbone runs FrozenBatchNorm2d with epsilon 0,' in caplog.text
    network.roi_heads.score_thresh = source.roi_heads.score_thresh
    frame = driving_frames(1, size=INPUT_SIZE)[0]
    expected = torchvision_forward(source, frame)
    for name, value in torchvision_forward(network, frame).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    published = create_instance_segmenter(coco_config).segment([frame])[0].instances
    assert [instance.class_name for instance in published[:5]] == \
        [coco_category_names()[label] for label in expected['labels'][:5]]
    with_default_eps = torchvision_v1_coco_model(seed=1)
    for layer in with_default_eps.modules():
        if hasattr(layer, 'eps'):
            layer.eps = 1e-5
    other = torchvision_forward(with_default_eps, frame)
    assert len(other['scores']) != len(expected['scores']) or \
        not torch.allclose(other['scores'], expected['scores'], atol=1e-4)  # epsilon matters here


def test_onnxruntime_matches_pytorch_detections_on_driving_frames(maskrcnn_checkpoint):
    frames = driving_frames(2)
    reference = create_instance_segmenter(config(maskrcnn_checkpoint)).segment(frames)
    onnx_runtime = create_instance_segmenter(config(maskrcnn_checkpoint, backend='onnxruntime'))
    assert onnx_runtime.backend.name == 'onnxruntime'
    actual = onnx_runtime.segment(frames)
    for want, got in zip(reference, actual):
        assert len(got.instances) == len(want.instances) > 0
        ious = box_iou(torch.tensor([i.box for i in got.instances]), torch.tensor([i.box for i in want.instances]))
        got_masks, want_masks = got.full_frame_masks(), want.full_frame_masks()
        for index, instance in enumerate(got.instances):
            match = int(ious[index].argmax())
            assert ious[index, match] >= 0.99 and instance.class_id == want.instances[match].class_id
            union = np.logical_or(got_masks[index], want_masks[match]).sum()
            assert union == 0 or np.logical_and(got_masks[index], want_masks[match]).sum() / union >= 0.98


def test_fixed_batch_graph_serves_any_number_of_cameras(maskrcnn_checkpoint):
    frames = driving_frames(3)
    single = create_instance_segmenter(config(maskrcnn_checkpoint)).segment(frames)
    batched = create_instance_segmenter(config(maskrcnn_checkpoint, backend='onnxruntime', max_batch=2))
    assert batched.fixed_batch == 2
    started = time.perf_counter()
    results = batched.segment(frames)  # 2 + 1 padded
    assert 0 < batched.backend_time.ms < (time.perf_counter() - started) * 1e3  # the two graph calls alone
    assert [r.image_size for r in results] == [f.shape[:2] for f in frames]
    assert [len(r.instances) for r in results] == [len(r.instances) for r in single]


def test_score_threshold_class_filter_and_empty_frames(maskrcnn_checkpoint):
    frame = driving_frames(1)[0]
    everything = create_instance_segmenter(config(maskrcnn_checkpoint)).segment([frame])[0]
    present = sorted({i.class_id for i in everything.instances})
    only_one = create_instance_segmenter(config(maskrcnn_checkpoint, output_filter=InstanceFilter(
        score_threshold=0.0, class_ids=(present[0],)))).segment([frame])[0]
    assert only_one.instances and {i.class_id for i in only_one.instances} == {present[0]}
    cutoff = sorted(i.score for i in everything.instances)[len(everything.instances) // 2]
    confident = create_instance_segmenter(config(maskrcnn_checkpoint, output_filter=InstanceFilter(
        score_threshold=cutoff))).segment([frame])[0]
    assert confident.instances and all(i.score >= cutoff for i in confident.instances)
    nothing = create_instance_segmenter(config(maskrcnn_checkpoint, output_filter=InstanceFilter(
        score_threshold=1.01))).segment([frame])[0]
    assert nothing.instances == [] and nothing.full_frame_masks().shape == (0, *frame.shape[:2])


def test_detections_down_to_the_track_low_score_are_kept_apart_for_the_tracker(maskrcnn_checkpoint):
    """With track_low_score under the score threshold the graph keeps detections down to it; the
    published instances are those of the graph without it, the others come apart, in the same
    order, for the tracker's second stage (ByteTrack)."""
    frame = driving_frames(1)[0]
    scores = sorted(i.score for i in create_instance_segmenter(config(maskrcnn_checkpoint)).segment(
        [frame])[0].instances)
    low, cutoff = scores[len(scores) // 4], scores[len(scores) // 2]
    plain = create_instance_segmenter(config(maskrcnn_checkpoint, output_filter=InstanceFilter(
        score_threshold=cutoff, track_low_score=None))).segment([frame])[0]
    kept = create_instance_segmenter(config(maskrcnn_checkpoint, output_filter=InstanceFilter(
        score_threshold=cutoff, track_low_score=low))).segment([frame])[0]
    assert plain.low_score_instances == [] and kept.low_score_instances
    assert [(i.class_id, i.score, i.roi) for i in kept.instances] == [(i.class_id, i.score, i.roi)
                                                                       for i in plain.instances]
    for got, want in zip(kept.instances, plain.instances):
        np.testing.assert_array_equal(got.mask, want.mask)
    low_scores = [i.score for i in kept.low_score_instances]
    assert all(low <= score < cutoff for score in low_scores) and low_scores == sorted(low_scores, reverse=True)
    assert len(low_scores) == sum(low <= score < cutoff for score in scores)


def test_the_graph_computes_masks_only_for_what_is_published(maskrcnn_checkpoint):
    """Score threshold, class filter and max_instances act inside the graph, before the mask head,
    and publish the same instances as filtering torchvision's wider output on the host."""
    frame = driving_frames(1)[0]
    wide = create_instance_segmenter(config(maskrcnn_checkpoint)).segment([frame])[0].instances
    cutoff = float(np.median([i.score for i in wide]))
    present = sorted({i.class_id for i in wide if i.score >= cutoff})
    output_filter = InstanceFilter(score_threshold=cutoff, max_instances=3, class_ids=tuple(present[:2]))
    narrow = create_instance_segmenter(config(maskrcnn_checkpoint, output_filter=output_filter))
    outputs = narrow.infer_raw([frame])
    count = int(outputs['num_detections'][0])
    assert outputs['mask_probs'].shape[1] == 3 and 0 < count <= 3  # the mask head ran for these alone
    assert (outputs['scores'][0, :count] >= cutoff).all()
    assert set(narrow.class_map[outputs['labels'][0, :count]]) <= set(present[:2])
    expected = [i for i in wide if i.score >= cutoff and i.class_id in present[:2]][:3]
    published = narrow.segment([frame])[0].instances
    assert [(i.class_id, round(i.score, 5)) for i in published] == [(i.class_id, round(i.score, 5)) for i in expected]
    for got, want in zip(published, expected):
        np.testing.assert_allclose(got.box, want.box, atol=1e-3)
        np.testing.assert_array_equal(got.mask, want.mask)


def test_coco_classes_map_onto_cityscapes_things():
    coco = get_label_set('coco_things')
    mapping = class_map(coco_category_names(), coco, cityscapes_things())
    names = coco_category_names()
    things = cityscapes_things().names
    assert things[mapping[names.index('person')]] == 'person' and things[mapping[names.index('car')]] == 'car'
    assert mapping[names.index('airplane')] == -1 and mapping[0] == -1  # unmapped class, background
    assert 'rider' not in {things[i] for i in mapping if i >= 0}
    assert (mapping >= 0).sum() == 7


def test_torchvision_coco_checkpoint_loads_and_publishes_cityscapes_classes(tmp_path):
    """torchvision's COCO Mask R-CNN layout (91 classes) loads unchanged; outputs come mapped."""
    torch.manual_seed(5)
    source = mask_rcnn('maskrcnn_resnet50_fpn', 91, max_detections=20)
    path = tmp_path / 'maskrcnn_resnet50_fpn_coco.pth'
    torch.save(source.state_dict(), path)
    frame = driving_frames(1, size=INPUT_SIZE)[0]
    coco = create_instance_segmenter(config(path, label_set='coco_things'))
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(coco.backend.module.model.state_dict()[name], tensor, rtol=0, atol=0)
    cityscapes_classes = ('person', 'car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle')
    coco_ids = tuple(label.id for label in get_label_set('coco_things').classes if label.name in cityscapes_classes)
    filtered = create_instance_segmenter(config(path, label_set='coco_things', output_filter=InstanceFilter(
        score_threshold=KEEP_ALL.score_threshold, max_instances=KEEP_ALL.max_instances, class_ids=coco_ids)))
    expected = filtered.segment([frame])[0].instances
    assert {i.class_name for i in coco.segment([frame])[0].instances} - set(cityscapes_classes)  # others compete
    mapped = create_instance_segmenter(config(path, label_set='coco_things', output_label_set='cityscapes_things'))
    assert mapped.label_set.name == 'cityscapes_things'
    mapped_instances = mapped.segment([frame])[0].instances
    # The 20 best of the mapped classes: COCO classes Cityscapes lacks never take a place among them.
    assert len(mapped_instances) == KEEP_ALL.max_instances
    assert [(i.class_name, round(i.score, 5)) for i in mapped_instances] == \
        [(i.class_name, round(i.score, 5)) for i in expected]


def test_bad_settings_are_refused(maskrcnn_checkpoint):
    with pytest.raises(ValueError, match='multiple of 32'):
        create_instance_segmenter(config(maskrcnn_checkpoint, input_size=(250, 500)))
    with pytest.raises(ValueError, match='unknown instance architecture'):
        create_instance_segmenter(config(maskrcnn_checkpoint, architecture='yolo'))
    with pytest.raises(Exception, match='does not fit the network'):
        create_instance_segmenter(config(maskrcnn_checkpoint, label_set='coco_things'))


def test_onnxruntime_instance_backend_keeps_no_pytorch_module_and_no_memory_arena(maskrcnn_checkpoint):
    """The module the graph was exported from is released once the session exists, and the session
    runs without ONNX Runtime's CPU arena, which Mask R-CNN's detection-dependent shapes defeat."""
    import gc

    import onnxruntime
    from torchvision.models.detection import MaskRCNN

    def modules_alive() -> int:
        gc.collect()
        return sum(isinstance(item, MaskRCNN) for item in gc.get_objects())

    before = modules_alive()
    segmenter = create_instance_segmenter(config(maskrcnn_checkpoint, backend='onnxruntime'))
    assert modules_alive() == before
    options = segmenter.backend.session.get_session_options()
    assert not options.enable_cpu_mem_arena
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert segmenter.segment(driving_frames(1))[0].image_size == (360, 480)
