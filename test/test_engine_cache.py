"""The engine cache reuses an artifact only when every recorded input matches and the file is intact."""
import hashlib
import json

import numpy as np
import pytest
import torch

from seg_models.backends.factory import BackendSettings, DeploymentGraph, create_backend
from seg_models.engine_cache import EngineCache, module_sha256
from seg_models.export import export_semantic_onnx
from seg_models.models.deeplabv3plus import deeplabv3plus
from seg_models.models.semantic_inference import SemanticInference


def write(text):
    return lambda path: path.write_text(text)


def test_reuse_rebuild_on_changed_inputs_and_on_corruption(tmp_path):
    cache = EngineCache(tmp_path)
    key = {'onnx_sha256': 'abc', 'tensorrt': '10.3.0', 'gpu': 'Orin', 'precision': 'fp16'}
    path = cache.build('model', '.engine', key, write('engine v1'))
    assert cache.check('model', '.engine', key).reused
    changed = cache.check('model', '.engine', {**key, 'precision': 'int8'})
    assert not changed.reused and "precision: 'fp16' -> 'int8'" in changed.reason
    other_gpu = cache.check('model', '.engine', {**key, 'gpu': 'H100'})
    assert "gpu: 'Orin' -> 'H100'" in other_gpu.reason
    path.write_text('engine v1 but truncated')
    corrupt = cache.check('model', '.engine', key)
    assert not corrupt.reused and 'corrupt' in corrupt.reason
    (tmp_path / 'model.engine.json').write_text('{not json')
    assert 'unreadable' in cache.check('model', '.engine', key).reason
    assert cache.check('absent', '.engine', key).reason == 'no cached artifact'


def test_get_or_build_rebuilds_when_a_cached_file_cannot_be_loaded(tmp_path):
    cache = EngineCache(tmp_path)
    key = {'weights': '1'}
    builds = []

    def build(path):
        builds.append(path)
        path.write_text('good')

    def load(path):
        if path.read_text() != 'good':
            raise RuntimeError('deserialisation failed')
        return path.read_text()

    assert cache.get_or_build('m', '.bin', key, build, load)[0] == 'good' and len(builds) == 1
    value, entry = cache.get_or_build('m', '.bin', key, build, load)
    assert entry.reused and len(builds) == 1
    # Incompatible file with a matching sidecar (e.g. the runtime was upgraded in place).
    (tmp_path / 'm.bin').write_text('bad')
    sidecar = json.loads((tmp_path / 'm.bin.json').read_text())
    sidecar["sha256"] = hashlib.sha256(b"bad").hexdigest()
    (tmp_path / 'm.bin.json').write_text(json.dumps(sidecar))
    value, entry = cache.get_or_build('m', '.bin', key, build, load)
    assert value == 'good' and len(builds) == 2 and 'cannot be loaded (deserialisation failed)' in entry.reason
    assert [path.name for path, _ in cache.entries()] == ['m.bin']


def test_failed_build_leaves_no_artifact_that_looks_valid(tmp_path):
    cache = EngineCache(tmp_path)

    def broken(path):
        path.write_text('half')
        raise RuntimeError('builder crashed')

    with pytest.raises(RuntimeError):
        cache.build('m', '.engine', {'a': 1}, broken)
    assert not cache.check('m', '.engine', {'a': 1}).reused
    assert list(tmp_path.iterdir()) == []


def test_onnx_export_is_reused_while_weights_are_unchanged(tmp_path, caplog):
    caplog.set_level('INFO')
    torch.manual_seed(0)
    graph = SemanticInference(deeplabv3plus('mobilenet_v3_large', 19))
    exports = []

    def deployment(module):
        return DeploymentGraph(name='tiny', output_names=module.output_names, module=module, key={'label_set': 'x'},
                               export=lambda path: exports.append(path) or export_semantic_onnx(module, path, 'x',
                                                                                                (64, 96)))

    settings = BackendSettings(backend='onnxruntime', engine_dir=str(tmp_path))
    first = create_backend(deployment(graph), settings)
    second = create_backend(deployment(graph), settings)
    assert len(exports) == 1 and 'reused: cached artifact matches' in caplog.text
    images = np.zeros((1, 3, 64, 96), np.uint8)
    np.testing.assert_array_equal(first.infer(images)['class_ids'], second.infer(images)['class_ids'])
    torch.manual_seed(1)
    retrained = SemanticInference(deeplabv3plus('mobilenet_v3_large', 19))
    assert module_sha256(retrained) != module_sha256(graph)
    create_backend(deployment(retrained), settings)
    assert len(exports) == 2 and 'weights_sha256' in caplog.text
