"""TensorRT engines on a real GPU: FP16 DeepLabv3+ ResNet-50 and Mask R-CNN at 1024x2048, parity
with PyTorch on the same GPU, engine-cache reuse and rebuild. Skipped, with the reason, where
TensorRT or a CUDA GPU is missing (CI, CPU-only machines)."""
import time

import numpy as np
import pytest
import torch

from seg_models.backends.tensorrt import tensorrt_unavailable_reason

UNAVAILABLE = tensorrt_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.skipif(
    UNAVAILABLE is not None, reason=f'TensorRT tests need TensorRT and a GPU: {UNAVAILABLE}')]

FULL_SIZE = (1024, 2048)


def frames(count):
    from shared_data import driving_frames

    return driving_frames(count, size=FULL_SIZE)


def median_ms(function, repeats=10):
    function()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return 1000 * float(np.median(timings))


def test_fp16_deeplabv3plus_engine_matches_pytorch_on_the_gpu(deeplabv3plus_resnet50_checkpoint, tmp_path, capsys):
    from seg_models.configs import SemanticModelConfig, build_config
    from seg_models.segmenters.semantic import create_semantic_segmenter

    common = dict(architecture='deeplabv3plus_resnet50', checkpoint=str(deeplabv3plus_resnet50_checkpoint),
                  input_size=FULL_SIZE, device='cuda', engine_dir=str(tmp_path))
    reference = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='pytorch', **common)))
    engine = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='tensorrt', precision='fp16',
                                                                           **common)))
    images = frames(2)
    for want, got in zip(reference.segment(images), engine.segment(images)):
        assert np.mean(want.class_ids == got.class_ids) >= 0.995
    with capsys.disabled():
        print(f'\nDeepLabv3+ R50 1024x2048: pytorch fp32 {median_ms(lambda: reference.segment(images[:1])):.1f} ms, '
              f'TensorRT fp16 {median_ms(lambda: engine.segment(images[:1])):.1f} ms per frame (end to end)')


def test_fp16_maskrcnn_engine_matches_pytorch_on_the_gpu(maskrcnn_checkpoint, tmp_path, capsys):
    from torchvision.ops import box_iou

    from seg_models.configs import InstanceFilter, InstanceModelConfig, build_config
    from seg_models.segmenters.instance import create_instance_segmenter

    common = dict(checkpoint=str(maskrcnn_checkpoint), input_size=FULL_SIZE, device='cuda', engine_dir=str(tmp_path),
                  output_filter=InstanceFilter(score_threshold=0.3))
    reference = create_instance_segmenter(build_config(InstanceModelConfig, dict(backend='pytorch', **common)))
    engine = create_instance_segmenter(build_config(InstanceModelConfig, dict(backend='tensorrt', precision='fp16',
                                                                           **common)))
    image = frames(1)
    want, got = reference.segment(image)[0], engine.segment(image)[0]
    assert want.instances and got.instances
    ious = box_iou(torch.tensor([i.box for i in want.instances]), torch.tensor([i.box for i in got.instances]))
    want_masks, got_masks = want.full_frame_masks(), got.full_frame_masks()
    matched = 0
    for index in range(len(want.instances)):
        match = int(ious[index].argmax())
        if ious[index, match] < 0.9:
            continue
        union = np.logical_or(want_masks[index], got_masks[match]).sum()
        assert np.logical_and(want_masks[index], got_masks[match]).sum() / max(union, 1) >= 0.95
        matched += 1
    assert matched >= 0.9 * len(want.instances)
    with capsys.disabled():
        print(f'\nMask R-CNN R50-FPN 1024x2048: pytorch fp32 {median_ms(lambda: reference.segment(image)):.1f} ms, '
              f'TensorRT fp16 {median_ms(lambda: engine.segment(image)):.1f} ms per frame (end to end)')


def test_engine_is_reused_and_a_corrupt_engine_is_rebuilt(tmp_path, caplog):
    from seg_models.configs import SemanticModelConfig, build_config
    from seg_models.segmenters.semantic import create_semantic_segmenter

    caplog.set_level('INFO')
    config = build_config(SemanticModelConfig, dict(architecture='deeplabv3plus_mobilenet_v3_large',
                                                    input_size=(256, 512), backend='tensorrt', precision='fp16',
                                                    engine_dir=str(tmp_path), checkpoint=''))
    torch.manual_seed(0)
    create_semantic_segmenter(config)
    engine = next(tmp_path.glob('*.engine'))
    engine.write_bytes(engine.read_bytes()[:1000])
    caplog.clear()
    torch.manual_seed(0)
    segmenter = create_semantic_segmenter(config)
    assert 'corrupt' in caplog.text
    assert segmenter.segment([np.zeros((256, 512, 3), np.uint8)])[0].class_ids.shape == (256, 512)


def test_int8_engine_builds_strongly_typed_from_the_qdq_graph(deeplabv3plus_resnet50_checkpoint, tmp_path):
    import cv2

    from seg_models.configs import SemanticModelConfig, build_config
    from seg_models.segmenters.semantic import create_semantic_segmenter

    calibration = tmp_path / 'calibration'
    calibration.mkdir()
    for index, frame in enumerate(frames(4)):
        cv2.imwrite(str(calibration / f'{index:03d}.png'), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    common = dict(architecture='deeplabv3plus_resnet50', checkpoint=str(deeplabv3plus_resnet50_checkpoint),
                  input_size=(512, 1024), engine_dir=str(tmp_path / 'engines'), calibration_images=str(calibration),
                  precision='int8')
    engine = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='tensorrt', **common)))
    reference = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='onnxruntime', **common)))
    assert list((tmp_path / 'engines').glob('*_int8-*.onnx')) and list((tmp_path / 'engines').glob('*.engine'))
    images = frames(2)
    for want, got in zip(reference.segment(images), engine.segment(images)):
        assert got.class_ids.shape == FULL_SIZE
        assert np.mean(want.class_ids == got.class_ids) >= 0.97  # the same Q/DQ graph on the CPU and in TensorRT
