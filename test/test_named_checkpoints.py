"""Named checkpoints: fetched once from a mirror (a loopback HTTP server serving files the tests
make), checked by their pinned sha256, never half-written, never fetched for a local path, and run
with their registry settings, in a segmenter and in a node started with ``checkpoint: NAME``."""
from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seg_models.checkpoints.fetch import MIRROR_ENV
from seg_models.checkpoints.named import absolute_checkpoint, checkpoint_identity, resolved_instance_config
from seg_models.checkpoints.reading import CheckpointError
from seg_models.checkpoints.registry import NAMED_CHECKPOINTS, REGISTRY_ENV
from seg_models.cli import main
from seg_models.configs import InstanceModelConfig, SemanticModelConfig, build_config
from seg_models.models.deeplabv3plus import deeplabv3plus
from seg_models.segmenters.semantic import create_semantic_segmenter

REPO_ROOT = Path(__file__).resolve().parents[1]


class WeightsServer:
    """A mirror on 127.0.0.1: serves ``files`` (name -> bytes); a name in ``cut`` is sent half and the
    connection closed; ``delay`` seconds between chunks; ``requests`` lists the paths asked for."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.delay = 0.0
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit('/', 1)[-1]
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                sent = body[:len(body) // 2] if name in server.cut else body
                for start in range(0, len(sent), 1 << 16):
                    self.wfile.write(sent[start:start + (1 << 16)])
                    time.sleep(server.delay)
                if name in server.cut:
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/weights'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    """The server as $SEG_MODELS_WEIGHTS_MIRROR, a fresh cache, and ``add(name, task, data, settings)``
    registering a served file under ``name`` in $SEG_MODELS_WEIGHTS_REGISTRY (pinned to its hash)."""
    server = WeightsServer()
    monkeypatch.setenv(MIRROR_ENV, server.url)
    monkeypatch.setenv('SEG_MODELS_CACHE_DIR', str(tmp_path / 'cache'))
    registry = tmp_path / 'registry.yaml'
    entries: list[dict] = []

    def add(name: str, task: str, data: bytes, settings: dict, sha256_prefix: str = '') -> str:
        prefix = sha256_prefix or hashlib.sha256(data).hexdigest()[:8]
        file_name = f'{name}-{prefix}.pth'
        server.files[file_name] = data
        entries.append(dict(name=name, task=task, url=f'https://example.invalid/models/{file_name}',
                            sha256_prefix=prefix, settings=settings, licence='test', upstream='made by the test'))
        registry.write_text(yaml.safe_dump(entries))
        monkeypatch.setenv(REGISTRY_ENV, str(registry))
        return file_name

    server.add = add
    server.cache = tmp_path / 'cache' / 'weights'
    yield server
    server.close()


def checkpoint_bytes(state_dict_or_object, tmp_path: Path) -> bytes:
    path = tmp_path / 'made.pth'
    torch.save(state_dict_or_object, path)
    return path.read_bytes()


def semantic_config(checkpoint: str, **settings) -> SemanticModelConfig:
    return build_config(SemanticModelConfig, dict(checkpoint=checkpoint, backend='pytorch', input_size=(64, 96),
                                                  **settings))


def small_cityscapes_model(tmp_path: Path) -> bytes:
    torch.manual_seed(0)
    return checkpoint_bytes(deeplabv3plus('mobilenet_v3_large', num_classes=19).state_dict(), tmp_path)


def test_weights_list_prints_every_entry_with_its_upstream_and_licence(capsys):
    assert main(['weights', 'list']) == 0
    printed = capsys.readouterr().out
    for entry in NAMED_CHECKPOINTS.values():
        assert entry.name in printed and entry.url in printed and entry.upstream in printed
    assert 'maskrcnn_resnet50_fpn_coco' in printed and 'deeplabv3plus_r50_d8_mapillary_vistas' in printed


def test_a_name_is_fetched_once_through_the_mirror_and_runs_with_its_settings(mirror, tmp_path, caplog):
    file_name = mirror.add('my_cityscapes_model', 'semantic', small_cityscapes_model(tmp_path),
                           {'label_set': 'cityscapes', 'architecture': 'deeplabv3plus_mobilenet_v3_large'})
    caplog.set_level('INFO')
    segmenter = create_semantic_segmenter(semantic_config('my_cityscapes_model'))
    assert segmenter.label_set.name == 'cityscapes' and segmenter.is_trained
    assert segmenter.weights_source == str(mirror.cache / file_name)
    assert f'fetching my_cityscapes_model from {mirror.url}/{file_name}' in caplog.text
    result = segmenter.segment([np.zeros((48, 64, 3), np.uint8)])[0]
    assert result.class_ids.shape == (48, 64)
    create_semantic_segmenter(semantic_config('my_cityscapes_model'))  # from the cache
    assert mirror.requests == [file_name]
    recorded = (mirror.cache / f'{file_name}.sha256').read_text().strip()
    assert recorded == hashlib.sha256(mirror.files[file_name]).hexdigest()
    assert sorted(path.name for path in mirror.cache.iterdir()) == sorted([file_name, f'{file_name}.sha256',
                                                                           f'{file_name}.lock'])
    with pytest.raises(CheckpointError, match=r'trained as label_set cityscapes \(named checkpoint '
                                              r'my_cityscapes_model\), but label_set is camvid'):
        create_semantic_segmenter(semantic_config('my_cityscapes_model', label_set='camvid'))
    (mirror.cache / file_name).write_bytes(b'changed')
    with pytest.raises(CheckpointError, match='changed since it was fetched'):
        create_semantic_segmenter(semantic_config('my_cityscapes_model'))


def test_a_hash_mismatch_or_a_cut_transfer_leaves_nothing_in_the_cache(mirror, tmp_path):
    data = small_cityscapes_model(tmp_path)
    mirror.add('wrong_hash', 'semantic', data, {'label_set': 'cityscapes'}, sha256_prefix='00000000')
    with pytest.raises(CheckpointError, match=r'did not give the file wrong_hash pins .* nothing was kept'):
        create_semantic_segmenter(semantic_config('wrong_hash'))
    cut = mirror.add('cut_short', 'semantic', data, {'label_set': 'cityscapes'})
    mirror.cut.add(cut)
    with pytest.raises(CheckpointError, match=r'did not give the file cut_short pins .*a transfer cut short'):
        create_semantic_segmenter(semantic_config('cut_short'))
    assert [path.name for path in mirror.cache.iterdir() if not path.name.endswith('.lock')] == []


def test_without_network_one_line_says_how_to_fetch_elsewhere(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv('SEG_MODELS_CACHE_DIR', str(tmp_path))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    entry = NAMED_CHECKPOINTS['deeplabv3plus_r50_d8_cityscapes']
    closed = f'http://127.0.0.1:9/{entry.file_name}'  # the discard port: nothing listens
    monkeypatch.setenv(MIRROR_ENV, 'http://127.0.0.1:9')
    assert main(['weights', 'fetch', entry.name]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and closed in error[0] and f'seg-models weights fetch {entry.name}' in error[0]
    assert entry.url in error[0] and str(tmp_path / 'weights' / entry.file_name) in error[0]


def test_a_local_path_never_downloads_and_unknown_names_are_named(mirror, tmp_path, monkeypatch):
    mirror.add('known_model', 'semantic', small_cityscapes_model(tmp_path), {'label_set': 'cityscapes'})
    with pytest.raises(CheckpointError, match='does not exist'):
        create_semantic_segmenter(semantic_config(str(tmp_path / 'known_model.pth')))
    with pytest.raises(CheckpointError, match=r'neither a file nor a named checkpoint: .*known: .*known_model'):
        create_semantic_segmenter(semantic_config('unknown_model'))
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'known_model').write_bytes(b'')  # a file of that name in the working folder: a path
    with pytest.raises(CheckpointError, match='is empty'):
        create_semantic_segmenter(semantic_config('known_model'))
    os.remove(tmp_path / 'known_model')
    with pytest.raises(CheckpointError, match='known_model is a semantic model, not an instance one'):
        resolved_instance_config(InstanceModelConfig(checkpoint='known_model'))
    assert mirror.requests == []


def test_a_name_travels_to_node_processes_as_it_is_and_a_path_made_absolute(tmp_path, monkeypatch):
    """What run_pipeline, replay and the fleet worker hand to the nodes, and key their caches by."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    assert absolute_checkpoint('maskrcnn_resnet50_fpn_coco') == 'maskrcnn_resnet50_fpn_coco'
    assert absolute_checkpoint('weights/model.pth') == str(tmp_path / 'weights' / 'model.pth')
    assert checkpoint_identity('maskrcnn_resnet50_fpn_coco') == 'maskrcnn_resnet50_fpn_coco@bf2d0c1e'
    (tmp_path / 'model.pth').write_bytes(b'weights')
    assert checkpoint_identity('model.pth') == hashlib.sha256(b'weights').hexdigest()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_fetched_file_that_needs_code_is_still_refused(mirror, tmp_path):
    marker = tmp_path / 'code_ran'
    data = checkpoint_bytes({'head.classifier.weight': torch.zeros(1), 'payload': _RunsCode(marker)}, tmp_path)
    mirror.add('pickled_code', 'semantic', data, {'label_set': 'cityscapes'})
    with pytest.raises(CheckpointError, match='needs code to be unpickled and was refused'):
        create_semantic_segmenter(semantic_config('pickled_code'))
    assert not marker.exists()


def test_two_processes_fetching_at_once_end_with_one_good_file(mirror, tmp_path):
    file_name = mirror.add('shared_model', 'semantic', small_cityscapes_model(tmp_path), {'label_set': 'cityscapes'})
    mirror.delay = 0.05  # a transfer of a few seconds: the second process starts while the first fetches
    command = [sys.executable, '-m', 'seg_models', 'weights', 'fetch', 'shared_model']
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert all(str(mirror.cache / file_name) in out for out, _ in outputs)
    assert mirror.requests == [file_name]
    assert (mirror.cache / file_name).read_bytes() == mirror.files[file_name]


@pytest.mark.ros
@pytest.mark.slow
def test_an_instance_node_started_with_a_name_fetches_it_and_publishes_its_mapped_classes(mirror, tmp_path,
                                                                                           tmp_path_factory):
    """``checkpoint: maskrcnn_resnet50_fpn_coco`` (here a v1-layout COCO file the test makes, pinned in
    its registry file under the official name and settings): fetched through the mirror by the node,
    COCO classes published as Cityscapes things."""
    from seg_perception.messages.images import array_to_image_msg
    from std_msgs.msg import Header

    from model_files import torchvision_v1_coco_model
    from shared_data import driving_frames
    from test_instance_node import instance_node, instance_probe

    official = NAMED_CHECKPOINTS['maskrcnn_resnet50_fpn_coco']
    file_name = mirror.add(official.name, 'instance', checkpoint_bytes(torchvision_v1_coco_model(seed=1).state_dict(),
                                                                        tmp_path), official.settings)
    with instance_node(tmp_path_factory, '/named', official.name, 'backend:=pytorch', 'score_threshold:=0.05') as node:
        probe = instance_probe('named_checkpoint_probe', node, '/named')
        try:
            probe.connect(timeout=300)
            msg = probe.result(probe.send(array_to_image_msg(driving_frames(1)[0], 'rgb8', Header())))
            assert msg.label_set == 'cityscapes_things'
            probe.wait_for(lambda: probe.label_sets, 'no label set', 10)
            assert probe.label_sets[0].name == 'cityscapes_things'
        finally:
            probe.close()
        assert f'fetching {official.name} from {mirror.url}/{file_name}' in node.output()
    assert mirror.requests == [file_name] and (mirror.cache / file_name).is_file()


@pytest.mark.slow
def test_training_starts_from_a_named_coco_mask_rcnn_and_reinitialises_its_class_heads(mirror, tmp_path, caplog):
    """``seg-models train --init maskrcnn_resnet50_fpn_coco``: fetched like any name (here the test's
    v1-layout COCO file under the official name), its class-specific layers re-initialised."""
    from dataset_folders import write_camvid_folder
    from model_files import torchvision_v1_coco_model

    official = NAMED_CHECKPOINTS['maskrcnn_resnet50_fpn_coco']
    file_name = mirror.add(official.name, 'instance', checkpoint_bytes(torchvision_v1_coco_model(seed=1).state_dict(),
                                                                        tmp_path), official.settings)
    data = write_camvid_folder(tmp_path / 'camvid', frames=2)
    assert main(['train', '--task', 'instance', '--data', str(data), '--output', str(tmp_path / 'run'),
                 '--iterations', '1', '--batch-size', '1', '--workers', '0', '--device', 'cpu', '--init',
                 official.name, '--val-split', '']) == 0
    assert mirror.requests == [file_name]
    assert 'class-specific layers roi_heads.box_predictor.bbox_pred' in caplog.text
