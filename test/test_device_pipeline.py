"""The device-side path (seg_models.backends.device_pipeline): frames up once, pre/post-processing where the
network runs, small results back.

Everything runs on the CPU too (the same code, without pinning or a stream), so CI checks it; the
tests marked ``gpu`` compare the CUDA path with that CPU reference and run on a GPU machine
(docs/backends_and_gpu.md "The GPU path": how, and their last results); elsewhere they skip
(conftest.py). This file imports no ROS, so it runs where only PyTorch is installed.
"""
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from fitted_models import CAMVID, CAMVID_VOID, FIT_SIZE, camvid_available, camvid_frames
from seg_models.backends.availability import resolved_device, unusable_reason
from seg_models.backends.factory import create_backend
from seg_models.deploy.graph import DeploymentGraph
from seg_models.backends.pytorch import PyTorchBackend
from seg_models.configs import BackendSettings, InstanceFilter, InstanceModelConfig, SemanticModelConfig, build_config
from seg_models.backends.device_pipeline import DeviceOptions, StageClock
from seg_models.bench.fidelity import identical_pixels, instance_agreement
from seg_models.segmenters.instance import InstanceSegmenter, instance_deployment
from seg_models.segmenters.instance_postprocess import (Detection, _padded_masks_and_boxes, box_roi,
                                                        paste_masks_gathered, paste_masks_in_rois)
from seg_models.segmenters.semantic import SemanticSegmenter, semantic_deployment

needs_camvid = pytest.mark.skipif(not camvid_available(), reason=f'needs the CamVid frames in {CAMVID}')
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)]
CAMERA_SIZE = (360, 480)
SCORE_THRESHOLD = 0.5


def semantic_segmenter(checkpoint, device='cpu', precision='fp32', device_side=True, input_size=FIT_SIZE,
                       options=DeviceOptions(), label_set='camvid'):
    config = build_config(SemanticModelConfig, dict(checkpoint=str(checkpoint) if checkpoint else '',
                                                     label_set=label_set, input_size=input_size))
    # the graph TensorRT and ONNX Runtime run on a GPU (class ids), also for the host path here
    graph, labels, source = semantic_deployment(config, logits_on_host=False)
    backend = PyTorchBackend(graph.module, graph.output_names, device, precision, device_side=device_side,
                             options=options)
    return SemanticSegmenter(backend, labels, input_size, source)


def instance_segmenter(checkpoint, device='cpu', precision='fp32', device_side=True, input_size=FIT_SIZE):
    config = build_config(InstanceModelConfig, dict(checkpoint=str(checkpoint) if checkpoint else '',
                                                    input_size=input_size,
                                                    output_filter=InstanceFilter(score_threshold=SCORE_THRESHOLD)))
    graph, labels, classes, source = instance_deployment(config)
    backend = PyTorchBackend(graph.module, graph.output_names, device, precision, device_side=device_side)
    return InstanceSegmenter(backend, labels, input_size, classes, config.output_filter, None, source)


def mean_iou(results, truths, num_classes=CAMVID_VOID) -> float:
    from seg_models.bench.metrics import confusion_matrix, scores_from_confusion

    matrix = sum(confusion_matrix(truth, result.class_ids, num_classes) for result, truth in zip(results, truths))
    return scores_from_confusion(matrix, [str(index) for index in range(num_classes)])['miou']


# --- the mask paste ----------------------------------------------------------------------------------

def random_masks_and_detections(device):
    """Masks and boxes in every position: inside, at the corners, past the edge, below a pixel."""
    rng = np.random.default_rng(0)
    image_size = (120, 200)
    boxes = torch.tensor([[10.3, 20.7, 90.2, 100.9], [0.0, 0.0, 5.5, 3.2], [150.5, 60.1, 200.0, 120.0],
                          [40.0, 40.0, 40.6, 41.0], [199.2, 119.5, 200.0, 120.0], [3.0, 50.0, 197.5, 118.2]])
    probabilities = torch.from_numpy(rng.random((len(boxes), 28, 28), dtype=np.float32)).to(device)
    detections = [Detection(index, 0, 1.0, box.numpy(), box_roi(box.numpy(), image_size))
                  for index, box in enumerate(boxes)]
    return image_size, boxes, probabilities, detections


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('paste', ['per mask', 'gathered'])
def test_cropped_paste_equals_torchvision_paste_inside_the_box(device, paste):
    """On the host and on the GPU, pixel for pixel: our box-sized crops against torchvision's
    full-frame ``paste_masks_in_image`` on the same device, cropped (each mask resized on its own,
    the CPU's way, and all sampled at once, the GPU's way)."""
    image_size, boxes, probabilities, detections = random_masks_and_detections(device)
    reference = (paste_masks_in_image(probabilities[:, None], boxes.to(device), image_size)[:, 0] > 0.5).cpu()
    if paste == 'gathered':
        crops = paste_masks_gathered(*_padded_masks_and_boxes(probabilities, detections), detections, 0.5)
    elif device == 'cpu':
        crops = paste_masks_in_rois(probabilities, detections, 0.5)
    else:
        pytest.skip('on a GPU paste_masks_in_rois samples all masks at once (the gathered case)')
    assert all(crop.device.type == torch.device(device).type for crop in crops)
    for detection, crop in zip(detections, crops):
        x, y, width, height = detection.roi
        np.testing.assert_array_equal(crop.cpu().numpy(), reference[detection.index, y:y + height, x:x + width].numpy())
    assert crops[0].any() and crops[2].any() and crops[5].any()


# --- device side on the CPU: the same answers as the host path where no resizing differs -----------

def test_semantic_device_side_equals_host_path_at_network_size():
    frames = [np.random.default_rng(seed).integers(0, 256, (*FIT_SIZE, 3), dtype=np.uint8) for seed in range(2)]
    host_segmenter = semantic_segmenter(None, device_side=False, label_set='cityscapes')
    host = host_segmenter.segment(frames)
    device = semantic_segmenter(None, label_set='cityscapes')
    clock = device.backend.device_pipeline.clock = StageClock(cuda=False)
    on_device = device.segment(frames)
    assert identical_pixels(host, on_device) == 1.0
    assert set(clock.durations_ms()) == {'upload', 'preprocess', 'model', 'postprocess', 'download'}
    # the network's own share is timed on the host path; on the device it runs in one stream with the rest
    assert host_segmenter.backend_time.ms > 0 and math.isnan(device.backend_time.ms)


@pytest.mark.slow
@needs_camvid
def test_instance_device_side_equals_host_path_at_network_size(fitted_instance):
    frames = [image for image, _ in camvid_frames(size=FIT_SIZE)][:6]
    host = instance_segmenter(fitted_instance, device_side=False).segment(frames)
    device = instance_segmenter(fitted_instance).segment(frames)
    assert sum(len(result.instances) for result in host) >= 3, 'the fitted network must find instances'
    for want, got in zip(host, device):
        assert [(i.class_id, i.score, i.box, i.roi) for i in got.instances] == \
            [(i.class_id, i.score, i.box, i.roi) for i in want.instances]
        for a, b in zip(want.instances, got.instances):
            np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.slow
@needs_camvid
def test_bilinear_logits_at_camera_size_score_at_least_as_well_as_upsampled_ids(fitted_semantic, camvid_frames_full,
                                                                                capsys):
    """The device side upsamples logits to the camera's size before the argmax; the host path
    upsamples ids (nearest). Measured against CamVid's labels at 360x480 with the fitted network at
    its 192x256 input (a network that saw these frames: the comparison is between upsamplings)."""
    truths = [labels for _, labels in camvid_frames(size=CAMERA_SIZE)]
    nearest = mean_iou(semantic_segmenter(fitted_semantic, device_side=False).segment(camvid_frames_full), truths)
    bilinear = mean_iou(semantic_segmenter(fitted_semantic).segment(camvid_frames_full), truths)
    with capsys.disabled():
        print(f'\nCamVid mIoU at 360x480 from a 192x256 input: ids upsampled (nearest) {100 * nearest:.2f}%, '
              f'logits upsampled (bilinear) {100 * bilinear:.2f}% ({100 * (bilinear - nearest):+.2f} points)')
    assert nearest > 0.3, 'the fitted network must answer like a real one'
    assert bilinear >= nearest - 0.002


# --- choosing the device ---------------------------------------------------------------------------

def test_fp32_backend_calls_run_without_tf32_convolutions_as_the_device_path_does():
    """fp32 means fp32 on every PyTorch path (``infer`` too, which backend auto times): cuDNN's TF32
    is off during the call and as before after it."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, images):
            seen.append(torch.backends.cudnn.allow_tf32)
            return (images.float(),)

    before = torch.backends.cudnn.allow_tf32
    PyTorchBackend(Probe(), ('output',)).infer(np.zeros((1, 3, 4, 4), np.uint8))
    assert seen == [False] and torch.backends.cudnn.allow_tf32 == before


def test_box_predictor_in_fp32_escapes_autocast_and_the_network_still_pickles():
    """The fp16 PyTorch path runs Mask R-CNN under autocast but decodes boxes from fp32 regression
    (fp16 coordinates step by 1-2 pixels); the network stays picklable, as the export child needs."""
    import pickle

    from seg_models.models.instance_graph import box_predictor_in_fp32
    from seg_models.models.maskrcnn import mask_rcnn

    network = mask_rcnn('maskrcnn_resnet50_fpn', 9).eval()
    features = torch.randn(5, network.roi_heads.box_predictor.cls_score.in_features)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        plain = network.roi_heads.box_predictor(features)
        box_predictor_in_fp32(network)
        fp32 = network.roi_heads.box_predictor(features)
        unpickled = pickle.loads(pickle.dumps(network)).roi_heads.box_predictor(features)
    assert [t.dtype for t in plain] == [torch.bfloat16] * 2  # what autocast alone does
    assert [t.dtype for t in fp32] == [torch.float32] * 2
    assert all(torch.equal(a, b) for a, b in zip(fp32, unpickled))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(fp32, network.roi_heads.box_predictor(features)))


def test_device_auto_resolves_to_the_gpu_where_there_is_one():
    assert resolved_device('auto') == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert resolved_device('cpu') == 'cpu' and resolved_device('cuda:1') == 'cuda:1'
    assert BackendSettings().device == 'auto'


def test_onnxruntime_without_its_cuda_provider_is_unusable_on_a_gpu():
    import onnxruntime

    if 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        pytest.skip('this onnxruntime has the CUDA provider')
    graph = DeploymentGraph(name='g', output_names=('class_ids',), key={}, module=torch.nn.Identity())
    reason = unusable_reason('onnxruntime', graph, BackendSettings(device='cuda'))
    assert 'no CUDA execution provider' in reason
    assert unusable_reason('onnxruntime', graph, BackendSettings(device='cpu')) is None


@pytest.mark.gpu
def test_auto_on_a_gpu_without_tensorrt_picks_pytorch_on_cuda(caplog, tmp_path):
    import importlib.util

    if importlib.util.find_spec('tensorrt') is not None:
        pytest.skip('TensorRT is installed here')
    caplog.set_level('INFO')
    graph = semantic_deployment(build_config(SemanticModelConfig, dict(input_size=(128, 256))))[0]
    backend = create_backend(graph, BackendSettings(backend='auto', device='auto', precision='fp16',
                                                    engine_dir=str(tmp_path)))
    assert backend.name == 'pytorch' and backend.device == 'cuda' and backend.precision == 'fp16'
    assert backend.device_pipeline is not None
    assert 'backend auto: pytorch' in caplog.text and 'tensorrt unusable' in caplog.text


# --- on the GPU: against the CPU reference -------------------------------------------------------------

@pytest.mark.gpu
@needs_camvid
def test_cuda_semantic_equals_the_cpu_reference_and_fp16_stays_within_bounds(fitted_semantic, camvid_frames_full,
                                                                             capsys):
    reference = semantic_segmenter(fitted_semantic).segment(camvid_frames_full)
    fp32 = semantic_segmenter(fitted_semantic, 'cuda').segment(camvid_frames_full)
    eager = semantic_segmenter(fitted_semantic, 'cuda', options=DeviceOptions(cuda_graphs=False))
    fp16 = semantic_segmenter(fitted_semantic, 'cuda', 'fp16').segment(camvid_frames_full)
    agreement = {'cuda fp32': identical_pixels(reference, fp32), 'cuda fp16': identical_pixels(fp32, fp16),
                 'graph vs eager': identical_pixels(fp32, eager.segment(camvid_frames_full))}
    with capsys.disabled():
        print('\nidentical pixels: ' + ', '.join(f'{name} {100 * value:.3f}%' for name, value in agreement.items()))
    assert agreement['cuda fp32'] >= 0.999
    assert agreement['cuda fp16'] >= 0.995
    assert agreement['graph vs eager'] == 1.0


@pytest.fixture(scope='module')
def cuda_instance_agreements(fitted_instance, camvid_frames_full):
    reference = instance_segmenter(fitted_instance).segment(camvid_frames_full)
    fp32 = instance_segmenter(fitted_instance, 'cuda').segment(camvid_frames_full)
    fp16 = instance_segmenter(fitted_instance, 'cuda', 'fp16').segment(camvid_frames_full)
    agreements = {'cuda fp32 against cpu': instance_agreement(reference, fp32, SCORE_THRESHOLD),
                  'cuda fp16 against cuda fp32': instance_agreement(fp32, fp16, SCORE_THRESHOLD)}
    for name, agreement in agreements.items():
        print(f'\n{name}: {agreement.describe()}')
    return agreements


@pytest.mark.gpu
@needs_camvid
def test_cuda_instances_equal_the_cpu_reference(cuda_instance_agreements):
    cuda = cuda_instance_agreements['cuda fp32 against cpu']
    assert cuda.reference >= 10, 'the fitted network must find instances'
    assert cuda.missing == 0 and cuda.extra == 0 and cuda.min_mask_iou >= 0.99


@pytest.mark.gpu
@needs_camvid
def test_cuda_fp16_instances_keep_the_detections(cuda_instance_agreements):
    """Our guard: fp16 keeps nearly every detection and adds almost none (measured on the H200 over
    two fits: 15/15 matched; 33/34 matched and one extra)."""
    half = cuda_instance_agreements['cuda fp16 against cuda fp32']
    assert half.matched >= 0.9 * half.reference and half.missing + half.extra <= 0.1 * half.reference


@pytest.mark.gpu
@needs_camvid
@pytest.mark.xfail(strict=True, reason='fp16 Mask R-CNN under autocast misses the 0.9 bounds of the TensorRT '
                                       'issue on the H200, 2026-12-04: box IoU 0.70 / mask 0.84 in one fit, '
                                       '0.905 / 0.898 in another (README "The GPU path")')
def test_cuda_fp16_instances_stay_within_the_tensorrt_bounds(cuda_instance_agreements):
    half = cuda_instance_agreements['cuda fp16 against cuda fp32']
    assert half.within_instance_bounds(), half.describe()


@pytest.mark.gpu
def test_gathered_paste_equals_per_mask_resizing_on_the_gpu_at_camera_size(capsys):
    """50 masks of all sizes in a 1024x2048 frame: the GPU's one-pass sampling against one
    ``F.interpolate`` per mask on the same GPU (torchvision's arithmetic, up to rounding)."""
    rng = np.random.default_rng(1)
    height, width = 1024, 2048
    corners = rng.uniform(0, [width, height], (50, 2))
    boxes = np.clip(np.concatenate([corners, corners + rng.uniform(2, 600, (50, 2))], 1), 0,
                    [width, height, width, height]).astype(np.float32)
    masks = torch.from_numpy(rng.random((50, 28, 28), dtype=np.float32)).cuda()
    detections = [Detection(index, 0, 1.0, box, box_roi(box, (height, width))) for index, box in enumerate(boxes)]
    gathered = paste_masks_in_rois(masks, detections, 0.5)
    padded, expanded = _padded_masks_and_boxes(masks, detections)
    per_mask = [(torch.nn.functional.interpolate(mask[None], size=(y_b - y_a + 1, x_b - x_a + 1), mode='bilinear',
                                                 align_corners=False)[0, 0] > 0.5)
                for mask, (x_a, y_a, x_b, y_b) in zip(padded, expanded.tolist())]
    different = total = 0
    for detection, (x_a, y_a, _, _), crop, full in zip(detections, expanded.tolist(), gathered, per_mask):
        x, y, roi_width, roi_height = detection.roi
        reference = torch.zeros_like(crop)
        top, left = max(y, y_a), max(x, x_a)
        bottom, right = min(y + roi_height, y_a + full.shape[0]), min(x + roi_width, x_a + full.shape[1])
        reference[top - y:bottom - y, left - x:right - x] = full[top - y_a:bottom - y_a, left - x_a:right - x_a]
        different += int((crop != reference).sum())
        total += crop.numel()
    with capsys.disabled():
        print(f'\ngathered paste against per-mask F.interpolate on the GPU: {different} of {total} pixels differ')
    assert different <= total * 1e-5


@pytest.mark.gpu
def test_steady_state_allocates_nothing_new_on_the_device():
    """After the first frames of a shape, no new device memory (semantic: graph replays, no
    allocation at all; instance: the caching allocator's blocks are reused, no cudaMalloc)."""
    frames = [np.random.default_rng(seed).integers(0, 256, (512, 1024, 3), dtype=np.uint8) for seed in range(2)]
    semantic = semantic_segmenter(None, 'cuda', 'fp16', input_size=(256, 512), label_set='cityscapes')
    for _ in range(3):
        semantic.segment(frames)
    before = torch.cuda.memory_stats()
    for _ in range(5):
        semantic.segment(frames)
    after = torch.cuda.memory_stats()
    assert after['allocation.all.allocated'] == before['allocation.all.allocated']
    assert after['segment.all.allocated'] == before['segment.all.allocated']
    instance = instance_segmenter(None, 'cuda', 'fp16', input_size=(512, 1024))
    for _ in range(3):
        instance.segment(frames)
    before = torch.cuda.memory_stats()
    for _ in range(5):
        instance.segment(frames)
    assert torch.cuda.memory_stats()['segment.all.allocated'] == before['segment.all.allocated']
