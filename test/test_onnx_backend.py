"""ONNX export + ONNX Runtime reproduce the PyTorch reference on real driving frames."""

import numpy as np
import pytest

from shared_data import driving_frames
from seg_models.backends.base import BackendError
from seg_models.backends.onnxruntime import OnnxRuntimeBackend
from seg_models.deploy.engine_cache import EngineCache
from seg_models.deploy.onnx_export import read_onnx_metadata
from seg_models.configs import SemanticModelConfig, build_config
from seg_models.segmenters.semantic import create_semantic_segmenter

pytestmark = pytest.mark.slow


def test_onnxruntime_matches_pytorch_on_driving_frames(deeplabv3plus_checkpoint):
    frames = driving_frames(4)
    common = dict(checkpoint=str(deeplabv3plus_checkpoint), input_size=(256, 512), with_confidence=True)
    reference = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='pytorch', **common)))
    onnx_runtime = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='onnxruntime', **common)))
    assert onnx_runtime.backend.name == 'onnxruntime'
    # The export, in this test run's cache (shared with the other tests of this checkpoint)
    exported = [path for path, key in EngineCache().entries()
                if key and key.get('format') == 'onnx' and key.get('outputs') == ['class_ids', 'confidence']]
    metadata = read_onnx_metadata(exported[0])
    assert metadata['label_set'] == 'cityscapes' and metadata['kind'] == 'semantic'
    expected, actual = reference.segment(frames), onnx_runtime.segment(frames)  # one batch of 4
    for want, got in zip(expected, actual):
        assert got.class_ids.shape == want.class_ids.shape == frames[0].shape[:2]
        assert np.mean(got.class_ids == want.class_ids) >= 0.995
        assert np.abs(got.confidence - want.confidence).max() < 1e-3


@pytest.mark.parametrize('with_confidence', [False, True])
def test_exported_graph_takes_any_batch_and_size(deeplabv3plus_checkpoint, with_confidence):
    """On the CPU the graph ends at quarter-resolution logits; with a confidence output, at class ids."""
    segmenter = create_semantic_segmenter(build_config(SemanticModelConfig, dict(
        checkpoint=str(deeplabv3plus_checkpoint), backend='onnxruntime', input_size=(64, 96),
        with_confidence=with_confidence)))
    backend = segmenter.backend
    for shape in ((1, 3, 64, 96), (3, 3, 72, 128)):
        outputs = backend.infer(np.zeros(shape, np.uint8))
        if with_confidence:
            assert outputs['class_ids'].shape == (shape[0], *shape[2:]) and outputs['class_ids'].dtype == np.uint8
        else:
            assert outputs['logits'].shape == (shape[0], 19, shape[2] // 4, shape[3] // 4)
            assert outputs['logits'].dtype == np.float32


def test_corrupt_onnx_file_gives_a_clear_error(tmp_path):
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'\x08\x07 not a model')
    with pytest.raises(BackendError, match='ONNX Runtime cannot load'):
        OnnxRuntimeBackend(broken)
