"""Named checkpoints: fetched once from a mirror (a loopback HTTP server serving files the tests
make, also as a Hugging Face Hub endpoint for ``hf://`` entries), checked by their pinned sha256,
never half-written, never fetched for a local path, and run with their registry settings, in a
segmenter and in a node started with ``checkpoint: NAME``."""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml

from seg_models.checkpoints.fetch import HUB_ENDPOINT_ENV, MIRROR_ENV, fetch
from seg_models.checkpoints.named import absolute_checkpoint, checkpoint_identity, resolved_instance_config
from seg_models.checkpoints.reading import CheckpointError
from seg_models.checkpoints.registry import NAMED_CHECKPOINTS, REGISTRY_ENV, NamedCheckpoint, get_named_checkpoint
from seg_models.cli import main
from seg_models.configs import InstanceModelConfig, SemanticModelConfig, build_config
from seg_models.models.deeplabv3plus import deeplabv3plus
from seg_models.segmenters.semantic import create_semantic_segmenter

REPO_ROOT = Path(__file__).resolve().parents[1]
REVISION = '0123456789abcdef0123456789abcdef01234567'  # the commit the test's hf:// entries pin
# what huggingface_hub asks a Hub endpoint for: HEAD then GET /{repo_id}/resolve/{revision}/{filename}
HUB_RESOLVE = re.compile(r'/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)')


class WeightsServer:
    """A mirror on 127.0.0.1: serves ``files`` (name -> bytes); a name in ``cut`` is sent half and the
    connection closed; ``delay`` seconds between chunks; ``requests`` lists the names asked for.
    At its root it is also a Hub endpoint: ``owner/repo@REVISION/filename`` names a Hub file, answered
    to a HEAD (``HEAD name`` in ``requests``) with the headers huggingface_hub requires (the commit,
    an ETag, the size) and to a GET with its bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.delay = 0.0
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self.answer(head=True)

            def do_GET(self) -> None:
                self.answer(head=False)

            def answer(self, head: bool) -> None:
                hub = HUB_RESOLVE.fullmatch(self.path)
                if not hub and not self.path.startswith('/weights/'):  # huggingface_hub's /api/ telemetry
                    self.send_error(404)
                    return
                name = (f'{hub["repo"]}@{hub["revision"]}/{hub["filename"]}' if hub else
                        self.path.rsplit('/', 1)[-1])
                server.requests.append(f'HEAD {name}' if head else name)
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                if hub:
                    self.send_header('X-Repo-Commit', hub['revision'])
                    self.send_header('ETag', f'"{hashlib.sha256(body).hexdigest()}"')
                self.end_headers()
                if head:
                    return
                sent = body[:len(body) // 2] if name in server.cut else body
                for start in range(0, len(sent), 1 << 16):
                    self.wfile.write(sent[start:start + (1 << 16)])
                    time.sleep(server.delay)
                if name in server.cut:
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.endpoint = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.url = f'{self.endpoint}/weights'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    """The server as $SEG_MODELS_WEIGHTS_MIRROR and $HF_ENDPOINT, a fresh cache, and ``add(name, task,
    data, settings)`` registering a served file under ``name`` in $SEG_MODELS_WEIGHTS_REGISTRY (pinned
    to its hash; with ``hub_path`` an ``hf://`` entry of that path in the repository test-owner/NAME
    at REVISION). It returns the name the server knows the file by."""
    server = WeightsServer()
    monkeypatch.setenv(MIRROR_ENV, server.url)
    monkeypatch.setenv(HUB_ENDPOINT_ENV, server.endpoint)
    monkeypatch.setenv('SEG_MODELS_CACHE_DIR', str(tmp_path / 'cache'))
    registry = tmp_path / 'registry.yaml'
    entries: list[dict] = []

    def add(name: str, task: str, data: bytes, settings: dict, sha256_prefix: str = '', hub_path: str = '') -> str:
        prefix = sha256_prefix or hashlib.sha256(data).hexdigest()[:8]
        served = f'test-owner/{name}@{REVISION}/{hub_path}' if hub_path else f'{name}-{prefix}.pth'
        server.files[served] = data
        url = f'hf://{served}' if hub_path else f'https://example.invalid/models/{served}'
        entries.append(dict(name=name, task=task, url=url, sha256_prefix=prefix, settings=settings, licence='test',
                            upstream='made by the test'))
        registry.write_text(yaml.safe_dump(entries))
        monkeypatch.setenv(REGISTRY_ENV, str(registry))
        return served

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


def small_cityscapes_model(tmp_path: Path, as_safetensors: bool = False) -> bytes:
    torch.manual_seed(0)
    state_dict = deeplabv3plus('mobilenet_v3_large', num_classes=19).state_dict()
    return safetensors.torch.save(state_dict) if as_safetensors else checkpoint_bytes(state_dict, tmp_path)


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


def test_an_hf_entry_is_fetched_once_from_the_hub_endpoint_at_its_commit_and_runs(mirror, tmp_path, capsys):
    served = mirror.add('hub_cityscapes_model', 'semantic', small_cityscapes_model(tmp_path, as_safetensors=True),
                        {'label_set': 'cityscapes', 'architecture': 'deeplabv3plus_mobilenet_v3_large'},
                        hub_path='weights/model.safetensors')
    cached = mirror.cache / f'test-owner--hub_cityscapes_model--{REVISION[:12]}--weights--model.safetensors'
    segmenter = create_semantic_segmenter(semantic_config('hub_cityscapes_model'))
    assert segmenter.weights_source == str(cached) and segmenter.is_trained
    assert segmenter.segment([np.zeros((48, 64, 3), np.uint8)])[0].class_ids.shape == (48, 64)
    create_semantic_segmenter(semantic_config('hub_cityscapes_model'))  # from the cache: the Hub is not asked
    assert mirror.requests == [f'HEAD {served}', served]
    assert cached.read_bytes() == mirror.files[served]
    recorded = (mirror.cache / f'{cached.name}.sha256').read_text().strip()
    assert recorded == hashlib.sha256(cached.read_bytes()).hexdigest()
    # huggingface_hub's .incomplete file and .cache/huggingface metadata left with the folder it downloaded into
    assert sorted(path.name for path in mirror.cache.iterdir()) == sorted([cached.name, f'{cached.name}.sha256',
                                                                           f'{cached.name}.lock'])
    assert main(['weights', 'list']) == 0
    listed = capsys.readouterr().out
    assert 'hub_cityscapes_model  (semantic, fetched)' in listed
    resolve = f'{mirror.endpoint}/test-owner/hub_cityscapes_model/resolve/{REVISION}/weights/model.safetensors'
    assert f'from: {resolve} (sha256 ' in listed


def test_an_hf_entry_that_is_not_the_pinned_file_leaves_nothing_in_the_cache(mirror):
    served = mirror.add('hub_wrong_hash', 'semantic', b'other weights' * 1000, {}, sha256_prefix='00000000',
                        hub_path='model.safetensors')
    with pytest.raises(CheckpointError, match=rf'{mirror.endpoint}/test-owner/hub_wrong_hash/resolve/{REVISION}/'
                                              r'model.safetensors did not give the file hub_wrong_hash pins .*nothing '
                                              r'was kept'):
        fetch(get_named_checkpoint('hub_wrong_hash'))
    assert mirror.requests == [f'HEAD {served}', served]
    lock = f'{get_named_checkpoint("hub_wrong_hash").file_name}.lock'
    assert [path.name for path in mirror.cache.iterdir()] == [lock]


def test_an_hf_entry_pinned_to_a_branch_is_refused_in_one_line(mirror, tmp_path, monkeypatch, capsys):
    registry = tmp_path / 'branch.yaml'
    registry.write_text(yaml.safe_dump([dict(name='hub_on_main', task='semantic', sha256_prefix='abcd1234',
                                             url='hf://test-owner/model@main/model.safetensors')]))
    monkeypatch.setenv(REGISTRY_ENV, str(registry))
    assert main(['weights', 'fetch', 'hub_on_main']) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(registry) in error[0] and 'revision main is not a commit sha' in error[0]
    assert mirror.requests == []


def test_an_hf_entry_offline_fails_in_one_line_saying_how_to_fetch_it_elsewhere(mirror):
    """HF_HUB_OFFLINE, huggingface_hub's own switch for a machine without network, read at its import."""
    mirror.add('hub_offline', 'semantic', b'weights', {}, hub_path='weights/model.safetensors')
    entry = get_named_checkpoint('hub_offline')
    done = subprocess.run([sys.executable, '-m', 'seg_models', 'weights', 'fetch', 'hub_offline'], cwd=REPO_ROOT,
                          env={**os.environ, 'HF_HUB_OFFLINE': '1'}, capture_output=True, text=True, timeout=300)
    error = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(error) == 1, done.stderr
    for part in (f'{mirror.endpoint}/test-owner/hub_offline/resolve/{REVISION}/weights/model.safetensors', entry.url,
                 'seg-models weights fetch hub_offline', str(mirror.cache / entry.file_name),
                 f'hf download test-owner/hub_offline weights/model.safetensors --revision {REVISION}'):
        assert part in error[0]
    assert mirror.requests == []


@pytest.mark.slow
def test_an_hf_entry_with_no_hub_listening_fails_in_one_line_naming_the_url(monkeypatch, tmp_path):
    """Slow: huggingface_hub retries a refused connection for about 20 s before it gives up."""
    monkeypatch.setenv(HUB_ENDPOINT_ENV, 'http://127.0.0.1:9')  # the discard port: nothing listens
    entry = NamedCheckpoint('hub_unreachable', 'semantic', f'hf://test-owner/model@{REVISION}/model.safetensors',
                            'abcd1234')
    with pytest.raises(CheckpointError) as raised:
        fetch(entry, tmp_path)
    message = str(raised.value)
    assert '\n' not in message and 'Connection refused' in message
    assert f'cannot fetch hub_unreachable from http://127.0.0.1:9/test-owner/model/resolve/{REVISION}/' in message
    assert [path.name for path in (tmp_path / 'weights').iterdir()] == [f'{entry.file_name}.lock']


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


@pytest.mark.parametrize('hub_path', ['', 'weights/model.pth'], ids=['url', 'hf'])
def test_a_fetched_file_that_needs_code_is_still_refused(mirror, tmp_path, hub_path):
    marker = tmp_path / 'code_ran'
    data = checkpoint_bytes({'head.classifier.weight': torch.zeros(1), 'payload': _RunsCode(marker)}, tmp_path)
    served = mirror.add('pickled_code', 'semantic', data, {'label_set': 'cityscapes'}, hub_path=hub_path)
    with pytest.raises(CheckpointError, match='needs code to be unpickled and was refused'):
        create_semantic_segmenter(semantic_config('pickled_code'))
    assert not marker.exists()
    assert served in mirror.requests


@pytest.mark.parametrize('hub_path', ['', 'model.pth'], ids=['url', 'hf'])
def test_two_processes_fetching_at_once_end_with_one_good_file(mirror, hub_path):
    """``weights fetch`` reads no weights: 1 MiB of bytes stands for a checkpoint."""
    served = mirror.add('shared_model', 'semantic', bytes(range(256)) * 4096, {}, hub_path=hub_path)
    cached = mirror.cache / get_named_checkpoint('shared_model').file_name
    mirror.delay = 0.2  # a transfer of about 3 s: the second process starts while the first fetches
    command = [sys.executable, '-m', 'seg_models', 'weights', 'fetch', 'shared_model']
    processes = [subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert all(str(cached) in out for out, _ in outputs)
    assert mirror.requests == ([f'HEAD {served}'] if hub_path else []) + [served]
    assert cached.read_bytes() == mirror.files[served]


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
