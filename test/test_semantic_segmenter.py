"""SemanticSegmenter: batches of any camera size in, class ids at each camera's resolution out."""
import dataclasses
import json
import re
import time

import numpy as np
import pytest
import torch

from seg_models.models.semantic_graph import IMAGENET_MEAN, IMAGENET_STD, SemanticInference
from seg_models.configs import SemanticModelConfig, build_config
from seg_models.segmenters.semantic import build_semantic_network, create_semantic_segmenter
from seg_models.segmenters.transform import CameraTransform
from seg_models.data.labels import cityscapes


@pytest.fixture(scope='module')
def segmenter():
    torch.manual_seed(0)
    return create_semantic_segmenter(build_config(SemanticModelConfig, dict(input_size=(64, 96), with_confidence=True,
                                                                            backend='pytorch')))


def test_mixed_camera_sizes_in_one_batch_come_back_at_their_own_size(segmenter):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((360, 480), (720, 1280), (64, 96))]
    results = segmenter.segment(images)
    assert [r.class_ids.shape for r in results] == [(360, 480), (720, 1280), (64, 96)]
    for result in results:
        assert result.class_ids.dtype == np.uint8 and result.class_ids.max() < 19
        assert result.confidence.dtype == np.float32
        assert 0.0 < result.confidence.min() and result.confidence.max() <= 1.0
    assert not segmenter.is_trained


def test_class_ids_are_the_argmax_of_the_network_on_normalised_pixels(segmenter):
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    network = segmenter.backend.module.network
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    normalised = (tensor - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = network(normalised).argmax(1)[0].numpy().astype(np.uint8)
    np.testing.assert_array_equal(segmenter.segment([image])[0].class_ids, expected)


@pytest.mark.parametrize('image_size', [(90, 120), (333, 500), (40, 52)])  # up by 4x and 1.4x, down
def test_argmax_at_image_size_is_the_argmax_of_torch_bilinear_logits(image_size):
    rng = np.random.default_rng(2)
    logits = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.normal(size=(1, 19, 28, 36)).astype(np.float32)),
                                            3, 1, 1)[0]
    logits[:, :8, :8] = 0.0  # equal maxima: the first class wins, as torch's argmax picks it
    expected = torch.nn.functional.interpolate(logits[None], size=image_size, mode='bilinear',
                                               align_corners=False)[0].argmax(0).numpy()
    got = CameraTransform.argmax_at_image_size(logits.numpy(), image_size, np.uint8)
    assert got.dtype == np.uint8 and got.shape == image_size
    assert np.mean(got == expected) > 0.9999, np.mean(got == expected)  # float rounding at near-ties only
    assert (got[:6 * image_size[0] // 28, :6 * image_size[1] // 36] == 0).all()


@pytest.mark.parametrize('backend', ['pytorch', 'onnxruntime'])
def test_on_the_cpu_ids_are_the_gpu_paths_answer_from_the_graphs_quarter_logits(backend, tmp_path):
    """The CPU graph ends at the head's quarter-resolution logits; the host upsamples them straight
    to the camera's size before the argmax: the class ids of the device pipeline's camera_forward."""
    torch.manual_seed(0)
    config = build_config(SemanticModelConfig, dict(input_size=(64, 96), backend=backend, device='cpu',
                                                    engine_dir=str(tmp_path)))
    cpu = create_semantic_segmenter(config)
    assert cpu.backend.output_names == ('logits',)
    image = np.random.default_rng(3).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    graph = SemanticInference(create_semantic_segmenter(dataclasses.replace(config, deployment=dataclasses.replace(
        config.deployment, backend='pytorch'))).backend.module.network)  # the same weights, as a GPU runs them
    with torch.no_grad():
        expected = graph.camera_forward(torch.from_numpy(image)[None], (64, 96))[0][0].numpy()
    got = cpu.segment([image])[0].class_ids
    assert got.shape == (150, 200) and np.mean(got == expected) > 0.9999, np.mean(got == expected)
    with_confidence = create_semantic_segmenter(dataclasses.replace(config, with_confidence=True))
    assert with_confidence.backend.output_names == ('class_ids', 'confidence')  # ids and confidence from the graph


def test_without_input_size_each_image_runs_at_its_own_size_grouped_by_size():
    calls = []
    own_size = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='pytorch'), input_size=None))
    infer = own_size.backend.infer
    own_size.backend.infer = lambda batch: calls.append(batch.shape) or infer(batch)
    sizes = [(32, 48), (40, 48), (32, 48)]
    results = own_size.segment([np.zeros((h, w, 3), np.uint8) for h, w in sizes])
    assert [r.class_ids.shape for r in results] == sizes
    assert sorted(calls) == [(1, 3, 40, 48), (2, 3, 32, 48)]  # one backend call per size


def test_backend_time_counts_the_backend_calls_of_the_last_segment_alone():
    own_size = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='pytorch'), input_size=None))
    infer = own_size.backend.infer
    own_size.backend.infer = lambda batch: time.sleep(0.05) or infer(batch)
    images = [np.zeros((h, w, 3), np.uint8) for h, w in ((32, 48), (40, 48))]
    for _ in range(2):  # reset at every call: two backend calls each time, not four
        started = time.perf_counter()
        own_size.segment(images)
        total_ms = (time.perf_counter() - started) * 1e3
        assert 100 <= own_size.backend_time.ms < total_ms


def test_untrained_network_is_reported_loudly(caplog):
    network, source = build_semantic_network(SemanticModelConfig(), cityscapes())
    assert source == ''
    assert 'UNTRAINED' in caplog.text


def test_unknown_architecture_and_backend_are_refused():
    with pytest.raises(ValueError, match='unknown semantic architecture'):
        create_semantic_segmenter(SemanticModelConfig(architecture='deeplabv3plus_vgg'))
    with pytest.raises(Exception, match='unknown backend'):
        create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='tensorrt_nope')))


def test_auto_backend_measures_once_and_takes_the_fastest(caplog, tmp_path):
    """auto times every usable backend on the model (here ONNX Runtime and PyTorch; TensorRT where
    present), keeps the fastest, and records the measurement in the cache for later starts."""
    from seg_models.backends.tensorrt import tensorrt_unavailable_reason

    caplog.set_level('INFO')
    config = build_config(SemanticModelConfig, dict(input_size=(64, 96), engine_dir=str(tmp_path)))
    first = create_semantic_segmenter(config)
    [record] = [path for path in tmp_path.glob('*_auto-*.json') if path.suffixes[-2:] != ['.json', '.json']]
    measured = json.loads(record.read_text())
    timings = measured['timings_ms']
    assert {'onnxruntime', 'pytorch'} <= set(timings) and all(ms > 0 for ms in timings.values())
    assert first.backend.name == measured['chosen'] == min(timings, key=timings.get)
    assert f'backend auto: {first.backend.name}, fastest here, measured now: ' in caplog.text
    reason = tensorrt_unavailable_reason()
    assert reason is None or f'tensorrt unusable: {reason}' in caplog.text
    caplog.clear()
    second = create_semantic_segmenter(config)
    assert second.backend.name == first.backend.name
    assert re.search(rf'reusing the choice measured on \d{{4}}-\d\d-\d\d \d\d:\d\d \({re.escape(record.name)}; '
                     rf'`seg-models build --remeasure` measures again\)', caplog.text), caplog.text
