"""The engine cache reuses an artifact only when every recorded input matches and the file is intact."""
import functools
import hashlib
import json
import os
import pickle

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

from seg_models.backends.factory import BackendSettings, create_backend
from seg_models.deploy.graph import DeploymentGraph
from seg_models.deploy.engine_cache import (MAX_ENTRIES_PER_STEM, CacheDirectoryError, EngineCache, checked_onnx,
                                     file_sha256, module_sha256, onnx_sha256)
from seg_models.deploy.onnx_export import export_semantic_onnx, read_onnx_metadata
from seg_models.deploy.export_process import ExportProcessError, export_in_child_process
from seg_models.models.deeplabv3plus import deeplabv3plus
from seg_models.models.semantic_graph import SemanticInference


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
    (tmp_path / f'{path.name}.json').write_text('{not json')
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
    _replace_keeping_the_sidecar_valid(entry.path, b'bad')
    value, entry = cache.get_or_build('m', '.bin', key, build, load)
    assert value == 'good' and len(builds) == 2 and 'cannot be loaded (deserialisation failed)' in entry.reason
    assert [path for path, _ in cache.entries()] == [entry.path]


def _replace_keeping_the_sidecar_valid(path, data: bytes) -> None:
    path.write_bytes(data)
    sidecar = path.with_name(path.name + '.json')
    recorded = json.loads(sidecar.read_text())
    recorded['sha256'] = hashlib.sha256(data).hexdigest()
    sidecar.write_text(json.dumps(recorded))


def test_entries_with_different_keys_live_side_by_side_and_the_least_recently_used_go(tmp_path):
    """Two nodes with different settings sharing a cache used to rebuild each other's file at every start."""
    cache = EngineCache(tmp_path)
    builds = []
    build = lambda path: builds.append(path) or path.write_text('x')  # noqa: E731
    for _ in range(2):
        for threshold in (0.5, 0.7):
            cache.get_or_build('maskrcnn', '.onnx', {'score_threshold': threshold}, build, load=lambda path: path)
    assert len(builds) == 2
    assert "score_threshold: 0.7 -> 0.9" in cache.check('maskrcnn', '.onnx', {'score_threshold': 0.9}).reason
    for threshold in (0.1, 0.2, 0.3):
        cache.get_or_build('maskrcnn', '.onnx', {'score_threshold': threshold}, build, load=lambda path: path)
    kept = sorted(key['score_threshold'] for _, key in cache.entries())
    assert kept == [0.1, 0.2, 0.3, 0.7] and len(list(tmp_path.glob('*.onnx'))) == MAX_ENTRIES_PER_STEM


def test_a_corrupt_onnx_matching_its_sidecar_is_rebuilt(tmp_path):
    cache = EngineCache(tmp_path)
    graph = onnx.helper.make_graph([onnx.helper.make_node('Identity', ['x'], ['y'])], 'g',
                                   [onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1])])
    export = lambda path: onnx.save(onnx.helper.make_model(graph), str(path))  # noqa: E731
    path, _ = cache.get_or_build('g', '.onnx', {'weights': 1}, export, load=checked_onnx)
    _replace_keeping_the_sidecar_valid(path, path.read_bytes()[:-7])
    rebuilt, entry = cache.get_or_build('g', '.onnx', {'weights': 1}, export, load=checked_onnx)
    assert 'cannot be loaded' in entry.reason and onnx.load(str(rebuilt)).graph.node[0].op_type == 'Identity'


def test_onnx_hash_covers_external_data_files(tmp_path):
    weights = onnx.numpy_helper.from_array(np.ones((64, 64), np.float32), 'w')
    graph = onnx.helper.make_graph([onnx.helper.make_node('MatMul', ['x', 'w'], ['y'])], 'g',
                                   [onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1, 64])],
                                   [onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1, 64])],
                                   [weights])
    model_path = tmp_path / 'model.onnx'
    onnx.save(onnx.helper.make_model(graph), str(model_path), save_as_external_data=True,
              location='model.onnx.data', size_threshold=0)
    before = onnx_sha256(model_path)
    data = bytearray((tmp_path / 'model.onnx.data').read_bytes())
    data[:4] = np.float32(2.0).tobytes()
    (tmp_path / 'model.onnx.data').write_bytes(bytes(data))  # new weights, same graph file
    assert onnx_sha256(model_path) != before and file_sha256(model_path) == file_sha256(model_path)


def test_engine_dir_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / 'file').write_text('')
    with pytest.raises(CacheDirectoryError, match='is a file, not a folder'):
        EngineCache(tmp_path / 'file')


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

    def deployment(module):
        return DeploymentGraph(name='tiny', output_names=module.output_names, module=module, key={'label_set': 'x'},
                               export=functools.partial(export_semantic_onnx, module, label_set='x',
                                                        input_size=(64, 96)))

    def exports():
        return caplog.text.count('building tiny-')

    settings = BackendSettings(backend='onnxruntime', engine_dir=str(tmp_path))
    first = create_backend(deployment(graph), settings)
    second = create_backend(deployment(graph), settings)
    assert exports() == 1 and 'reused: cached artifact matches' in caplog.text
    images = np.zeros((1, 3, 64, 96), np.uint8)
    np.testing.assert_array_equal(first.infer(images)['class_ids'], second.infer(images)['class_ids'])
    torch.manual_seed(1)
    retrained = SemanticInference(deeplabv3plus('mobilenet_v3_large', 19))
    assert module_sha256(retrained) != module_sha256(graph)
    create_backend(deployment(retrained), settings)
    assert exports() == 2 and 'weights_sha256' in caplog.text


def test_export_runs_in_a_child_process_and_its_failure_is_one_line(tmp_path):
    """The export leaves hundreds of MB of native memory in the process that runs it; a node must
    not keep that, so it runs in a child. Its error comes back as one line."""
    graph = SemanticInference(deeplabv3plus('mobilenet_v3_large', 19))
    path = tmp_path / 'child.onnx'
    export_in_child_process(functools.partial(export_semantic_onnx, graph, label_set='x', input_size=(64, 96)),
                            path)
    assert read_onnx_metadata(path)['label_set'] == 'x'
    with pytest.raises(ExportProcessError, match=r"^exporting gone\.onnx failed in its child process \(exit 1\): "
                                                 r"FileNotFoundError: .*gone\.onnx'$"):
        export_in_child_process(os.remove, tmp_path / 'gone.onnx')
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError), match='pickle|lambda'):
        export_in_child_process(lambda target: None, path)
