"""Instance models from other exporters, on ONNX graphs whose outputs the tests write: every format
decodes to the boxes and masks its tensors hold, mapped back through the letterbox to camera pixels;
metadata that contradicts the graph is refused in one line. (Ultralytics' own exports and its own
``predict`` are compared in test_ultralytics_models.py.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper

from seg_models.configs import InstanceFilter, InstanceModelConfig, build_config
from seg_models.segmenters.external_instance import Letterbox, load_instance_model
from seg_models.segmenters.instance import create_instance_segmenter

INPUT_SIZE = (256, 320)  # (height, width) of the graphs below
PROTOTYPE_STRIDE = 4


def constant_model(path: Path, outputs: dict[str, np.ndarray], input_size=INPUT_SIZE, batch=1,
                   names: str = '') -> Path:
    """An ONNX graph (N, 3, H, W) float -> constant ``outputs``: an exporter's tensors, chosen by the test."""
    nodes, graph_outputs = [], []
    for name, value in outputs.items():
        nodes.append(helper.make_node('Constant', [], [name], value=numpy_helper.from_array(value, name)))
        element = TensorProto.INT64 if value.dtype == np.int64 else TensorProto.FLOAT
        graph_outputs.append(helper.make_tensor_value_info(name, element, list(value.shape)))
    graph = helper.make_graph(nodes, 'exporter', [helper.make_tensor_value_info(
        'images', TensorProto.FLOAT, [batch, 3, *input_size])], graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=9)
    if names:
        model.metadata_props.add(key='names', value=names)
    onnx.save(model, str(path))
    return path


def metadata(folder: Path, onnx_file: Path, **fields) -> Path:
    path = folder / f'{onnx_file.stem}.yaml'
    path.write_text(yaml.safe_dump({'onnx': onnx_file.name, 'label_set': 'coco_things', **fields}))
    return path


def segmenter(metadata_path: Path, **filter_fields):
    return create_instance_segmenter(build_config(InstanceModelConfig, dict(
        model_metadata=str(metadata_path), backend='onnxruntime',
        output_filter=InstanceFilter(**{'score_threshold': 0.3, 'max_instances': 100, **filter_fields}))))


def rectangle_prototypes(box: tuple[float, float, float, float]) -> np.ndarray:
    """(1, 32, H/4, W/4) prototypes whose first one is +8 inside ``box`` (network pixels), -8 outside."""
    height, width = INPUT_SIZE[0] // PROTOTYPE_STRIDE, INPUT_SIZE[1] // PROTOTYPE_STRIDE
    centres_y = (np.arange(height) + 0.5) * PROTOTYPE_STRIDE
    centres_x = (np.arange(width) + 0.5) * PROTOTYPE_STRIDE
    inside = ((centres_y >= box[1]) & (centres_y < box[3]))[:, None] & ((centres_x >= box[0]) &
                                                                          (centres_x < box[2]))[None, :]
    prototypes = np.zeros((1, 32, height, width), np.float32)
    prototypes[0, 0] = np.where(inside, 8.0, -8.0)
    return prototypes


def camera_box(letterbox: Letterbox, box) -> np.ndarray:
    return letterbox.boxes_to_camera(np.asarray([box], np.float32))[0]


def test_end2end_rows_become_instances_through_the_letterbox(tmp_path):
    """YOLO26's NMS-free rows: a car with a rectangle mask, a person below the threshold."""
    car = (64.0, 96.0, 192.0, 160.0)  # network pixels, inside the letterboxed frame
    rows = np.zeros((1, 300, 38), np.float32)
    rows[0, 0, :6] = [*car, 0.9, 2]  # car
    rows[0, 0, 6] = 1.0  # coefficient of the rectangle prototype
    rows[0, 1, :6] = [10, 100, 40, 200, 0.2, 0]  # a person at 0.2: below the threshold
    model = constant_model(tmp_path / 'yolo26n-seg.onnx', {'output0': rows, 'output1': rectangle_prototypes(car)})
    frame = np.zeros((360, 640, 3), np.uint8)  # 16:9 into 256x320: letterboxed, padded top and bottom
    result = segmenter(metadata(tmp_path, model, format='ultralytics_seg_end2end')).segment([frame])[0]
    assert [(i.class_name, round(i.score, 3)) for i in result.instances] == [('car', 0.9)]
    letterbox = Letterbox.fit((360, 640), INPUT_SIZE, 'letterbox')
    assert (letterbox.scaled_size, letterbox.top, letterbox.left) == ((180, 320), 38, 0)
    expected = camera_box(letterbox, car)
    np.testing.assert_allclose(result.instances[0].box, expected, atol=1e-4)
    np.testing.assert_allclose(expected, [128, 116, 384, 244], atol=1e-4)  # (x - 0) * 2, (y - 38) * 2
    mask = result.full_frame_masks()[0]
    rows_in, columns_in = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # the rectangle's edges fall between prototype cells: within one cell (8 camera pixels) of the box
    assert abs(rows_in[0] - 116) <= 8 and abs(rows_in[-1] - 243) <= 8
    assert abs(columns_in[0] - 128) <= 8 and abs(columns_in[-1] - 383) <= 8
    assert mask[150:210, 160:350].all() and not mask[:100].any()


def test_ultralytics_rows_get_class_aware_nms_and_the_class_mapping(tmp_path):
    """YOLOv8/11 layout (B, 4 + 80 + 32, N): overlapping boxes of one class are suppressed, of two
    classes kept; COCO classes publish as Cityscapes things where mapped."""
    candidates = np.zeros((1, 4 + 80 + 32, 4), np.float32)
    centre_boxes = [(128, 128, 64, 64, 2, 0.9), (130, 128, 64, 64, 2, 0.8), (130, 128, 64, 64, 7, 0.7),
                    (40, 40, 20, 20, 9, 0.95)]  # car, overlapping car, truck over it, a traffic light
    for column, (x, y, w, h, coco_class, score) in enumerate(centre_boxes):
        candidates[0, :4, column] = [x, y, w, h]
        candidates[0, 4 + coco_class, column] = score
        candidates[0, 4 + 80, column] = 1.0
    model = constant_model(tmp_path / 'yolo11n-seg.onnx', {'output0': candidates, 'output1': rectangle_prototypes(
        (96, 96, 160, 160))}, names=repr({index: str(index) for index in range(80)}))
    frame = np.zeros(INPUT_SIZE + (3,), np.uint8)
    coco = segmenter(metadata(tmp_path, model, format='ultralytics_seg')).segment([frame])[0]
    assert [(i.class_name, round(i.score, 2)) for i in coco.instances] == [
        ('traffic light', 0.95), ('car', 0.9), ('truck', 0.7)]
    cityscapes = create_instance_segmenter(build_config(InstanceModelConfig, dict(
        model_metadata=str(tmp_path / 'yolo11n-seg.yaml'), backend='onnxruntime', output_label_set='cityscapes_things',
        output_filter=InstanceFilter(score_threshold=0.3, max_instances=1)))).segment([frame])[0]
    assert [(i.class_name, round(i.score, 2)) for i in cityscapes.instances] == [('car', 0.9)]
    np.testing.assert_allclose(cityscapes.instances[0].box, [96, 96, 160, 160], atol=1e-4)


def test_mmdeploy_layout_masks_are_sampled_inside_the_box(tmp_path):
    dets = np.zeros((1, 10, 5), np.float32)
    dets[0, 0] = [32, 64, 160, 192, 0.8]
    labels = np.zeros((1, 10), np.int64)
    labels[0, 0] = 0  # person
    masks = np.zeros((1, 10, *INPUT_SIZE), np.float32)
    masks[0, 0, 64:192, 32:96] = 1.0  # the left half of the box
    model = constant_model(tmp_path / 'rtmdet-ins.onnx', {'dets': dets, 'labels': labels, 'masks': masks})
    path = metadata(tmp_path, model, format='mmdeploy_instance', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375])
    frame = np.zeros((512, 640, 3), np.uint8)  # stretched: x2, y2
    result = segmenter(path).segment([frame])[0]
    assert [(i.class_name, round(i.score, 2)) for i in result.instances] == [('person', 0.8)]
    np.testing.assert_allclose(result.instances[0].box, [64, 128, 320, 384], atol=1e-4)
    mask = result.full_frame_masks()[0]
    assert mask[130:380, 66:190].all() and not mask[:, 194:].any() and mask.sum() == pytest.approx(256 * 128, rel=0.03)


def test_metadata_that_contradicts_the_graph_is_refused_in_one_line(tmp_path):
    rows = np.zeros((1, 4 + 19 + 32, 10), np.float32)  # 19 classes, not COCO's 80
    model = constant_model(tmp_path / 'other.onnx', {'output0': rows, 'output1': np.zeros((1, 32, 64, 80),
                                                                                           np.float32)})
    cases = {
        metadata(tmp_path, model, format='ultralytics_seg'):
            r'output0 holds 19 class scores .* but label set coco_things has 80 classes',
        tmp_path / 'e2e.yaml': r'output0 rows hold 10 values',
        tmp_path / 'mm.yaml': r'format mmdeploy_instance needs outputs of ranks \(3, 2, 4\)',
        tmp_path / 'bad.yaml': r'format: one of ultralytics_seg, ultralytics_seg_end2end, mmdeploy_instance',
    }
    (tmp_path / 'e2e.yaml').write_text(yaml.safe_dump({'onnx': 'other.onnx', 'format': 'ultralytics_seg_end2end',
                                                       'label_set': 'coco_things'}))
    (tmp_path / 'mm.yaml').write_text(yaml.safe_dump({'onnx': 'other.onnx', 'format': 'mmdeploy_instance',
                                                      'label_set': 'coco_things', 'mean': [0, 0, 0],
                                                      'std': [1, 1, 1]}))
    (tmp_path / 'bad.yaml').write_text(yaml.safe_dump({'onnx': 'other.onnx', 'format': 'yolo', 'label_set':
                                                       'coco_things'}))
    for path, words in cases.items():
        with pytest.raises(ValueError, match=words) as error:
            load_instance_model(path)
        assert '\n' not in str(error.value)


class MmdeployMaskRcnn(torch.nn.Module):
    """mmdeploy's instance-segmentation outputs from a torchvision Mask R-CNN (mmdeploy does not
    install here): normalised input in; ``dets`` (1, K, 5) x1 y1 x2 y2 score, ``labels`` (1, K) from 0,
    ``masks`` (1, K, H, W) probabilities at the input size."""

    def __init__(self, model, mean, std) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer('mean', torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images):
        pixels = (images * self.std + self.mean) / 255.0
        detections = self.model(list(pixels))[0]
        dets = torch.cat([detections['boxes'], detections['scores'][:, None]], dim=1)
        return dets[None], (detections['labels'] - 1)[None], detections['masks'][:, 0][None]


@pytest.mark.slow
def test_mmdeploy_layout_of_mask_rcnn_publishes_what_our_own_graph_does(maskrcnn_checkpoint, tmp_path):
    """The same Mask R-CNN weights as mmdeploy's tensors and through our own deployment graph: the same
    instances, boxes within 1e-3 px, masks within IoU 0.95 (at the network's own size)."""
    from seg_models.models.maskrcnn import mask_rcnn
    from shared_data import driving_frames

    size = (256, 512)
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    model = mask_rcnn('maskrcnn_resnet50_fpn', 9, max_detections=20)
    model.load_state_dict(torch.load(maskrcnn_checkpoint, weights_only=True))
    model.transform.min_size, model.transform.max_size = (size[0],), size[1]
    torch.onnx.export(MmdeployMaskRcnn(model, mean, std), (torch.zeros(1, 3, *size),), str(tmp_path / 'end2end.onnx'),
                      dynamo=False, opset_version=17, input_names=['input'], output_names=['dets', 'labels', 'masks'],
                      dynamic_axes={'dets': {1: 'detections'}, 'labels': {1: 'detections'},
                                    'masks': {1: 'detections'}})
    path = metadata(tmp_path, tmp_path / 'end2end.onnx', format='mmdeploy_instance', label_set='cityscapes_things',
                    mean=mean, std=std)
    output_filter = dict(score_threshold=0.05, max_instances=20)
    theirs = segmenter(path, **output_filter)
    ours = create_instance_segmenter(build_config(InstanceModelConfig, dict(
        checkpoint=str(maskrcnn_checkpoint), input_size=size, max_detections=20, backend='pytorch',
        output_filter=InstanceFilter(**output_filter))))
    frame = driving_frames(1, size=size)[0]
    expected, result = ours.segment([frame])[0], theirs.segment([frame])[0]
    assert len(result.instances) == len(expected.instances) > 3
    ious = []
    for mine, reference in zip(result.instances, expected.instances):
        assert (mine.class_name, mine.roi) == (reference.class_name, reference.roi)
        np.testing.assert_allclose(mine.box, reference.box, atol=1e-3)
        assert abs(mine.score - reference.score) < 1e-4
        ious.append((mine.mask & reference.mask).sum() / max((mine.mask | reference.mask).sum(), 1))
    print('mask IoU with our own graph: min', min(ious), 'median', np.median(ious))
    # ONNX's Resize in the exported paste against PyTorch's: pixels at the edge of thin masks differ
    assert min(ious) >= 0.95 and np.median(ious) >= 0.99


def yolo_rows_and_prototypes(seed: int = 0, candidates: int = 400) -> dict[str, np.ndarray]:
    """YOLOv8/11 outputs of many overlapping, random candidates over random prototypes: NMS, the
    class filter and mask assembly all have work to do."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((1, 4 + 80 + 32, candidates), np.float32)
    rows[0, 0] = rng.uniform(20, INPUT_SIZE[1] - 20, candidates)  # centre x
    rows[0, 1] = rng.uniform(20, INPUT_SIZE[0] - 20, candidates)  # centre y
    rows[0, 2:4] = rng.uniform(8, 120, (2, candidates))
    rows[0, 4:84] = rng.uniform(0, 0.5, (80, candidates)) ** 3
    rows[0, 84:] = rng.normal(0, 1, (32, candidates))
    prototypes = rng.normal(0, 2, (1, 32, INPUT_SIZE[0] // PROTOTYPE_STRIDE, INPUT_SIZE[1] // PROTOTYPE_STRIDE))
    return {'output0': rows, 'output1': prototypes.astype(np.float32)}


def test_onnx_runtime_hands_its_outputs_over_as_tensors_unchanged(tmp_path):
    """The I/O binding the device path runs on (the input read from the tensor, the outputs handed
    over by DLPack) gives ONNX Runtime's plain outputs; on the CPU here, on the CUDA provider alike."""
    outputs = yolo_rows_and_prototypes()
    model = constant_model(tmp_path / 'yolo11n-seg.onnx', outputs)
    found = segmenter(metadata(tmp_path, model, format='ultralytics_seg')).backend
    images = torch.rand(1, 3, *INPUT_SIZE)
    tensors = found.infer_tensors(images)
    plain = found.infer(images.numpy())
    assert set(tensors) == set(plain) == {'output0', 'output1'}
    for name, value in tensors.items():
        assert isinstance(value, torch.Tensor) and value.device.type == 'cpu'
        np.testing.assert_array_equal(value.numpy(), plain[name])
        np.testing.assert_array_equal(value.numpy(), outputs[name])


def post_processed_on(device: str, metadata_path: Path, frames: list[np.ndarray]):
    from seg_models.segmenters.external_instance import ExternalInstanceSegmenter

    cpu = segmenter(metadata_path, score_threshold=0.05, max_instances=40)
    return ExternalInstanceSegmenter(cpu.backend, cpu.spec, cpu.label_set, cpu.class_map, cpu.output_filter,
                                     device=device).segment(frames)


@pytest.mark.gpu
def test_on_a_cuda_device_nms_and_mask_assembly_give_the_cpu_results(tmp_path):
    """The post-processing's tensors on the GPU (scripts/gpu_checks.sh): the same detections, boxes
    and (box-cropped) masks as on the CPU, up to the GPU's float rounding at the mask threshold."""
    model = constant_model(tmp_path / 'yolo11n-seg.onnx', yolo_rows_and_prototypes())
    path = metadata(tmp_path, model, format='ultralytics_seg')
    frames = [np.zeros((360, 640, 3), np.uint8), np.zeros((512, 640, 3), np.uint8)]
    on_cpu, on_gpu = (post_processed_on(device, path, frames) for device in ('cpu', 'cuda'))
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert len(cpu.instances) > 5
        assert [(i.class_id, i.roi) for i in cpu.instances] == [(i.class_id, i.roi) for i in gpu.instances]
        np.testing.assert_allclose([i.score for i in cpu.instances], [i.score for i in gpu.instances], atol=1e-6)
        np.testing.assert_allclose([i.box for i in cpu.instances], [i.box for i in gpu.instances], atol=1e-3)
        for one, other in zip(cpu.instances, gpu.instances):
            assert (one.mask != other.mask).mean() < 0.01


def test_torch_keeps_one_thread_while_any_caller_post_processes_and_gets_its_threads_back():
    """one_torch_thread is process-wide: overlapping callers (two segmenters in one process) leave
    torch on one thread until the last one is out, then restore the count from before the first."""
    from seg_models.segmenters.external_instance import one_torch_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = one_torch_thread(True), one_torch_thread(True)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
        with one_torch_thread(False):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
