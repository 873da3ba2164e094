"""What a new user meets in the first hour: --help everywhere, warnings that are true, refusals in
our words, integers for doubles, the engine cache listing what it holds, the licence."""
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

REPO_ROOT = Path(__file__).resolve().parent.parent
EXECUTABLE_MODULES = ['seg_perception.nodes.semantic_segmentation', 'seg_perception.nodes.instance_segmentation',
                      'seg_perception.nodes.image_source', 'seg_perception.nodes.instance_listener',
                      'seg_perception.evaluation.ground_truth_echo', 'seg_perception.tools.plain_node']


def _module_main(module: str) -> str:
    """The ``-c`` code that runs ``module``'s executable entry (as the console scripts do)."""
    node_classes = {'seg_perception.nodes.semantic_segmentation': 'SemanticSegmentationNode',
                    'seg_perception.nodes.instance_segmentation': 'InstanceSegmentationNode'}
    entry = f'{node_classes[module]}.main' if module in node_classes else 'main'
    return f'import {module} as m; m.{entry}()'


@pytest.mark.parametrize('module, arguments', [(module, ['--help']) for module in EXECUTABLE_MODULES] + [
    (EXECUTABLE_MODULES[0], ['--ros-args', '--help']), (EXECUTABLE_MODULES[2], ['-h'])])
def test_every_executable_prints_its_parameters_on_help_and_exits_0(module, arguments):
    result = subprocess.run([sys.executable, '-c', _module_main(module), *arguments], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: ') and 'Traceback' not in result.stderr
    if module.endswith('_segmentation'):
        for name in ('checkpoint (string; default', 'backend (string; default auto; allowed auto, pytorch',
                     'diagnostics_period_sec (double; default 1.0; allowed [0.1, 60.0])', 'autostart'):
            assert name in result.stdout, result.stdout


def test_an_integer_is_taken_for_a_double_parameter():
    import rclpy
    from rclpy.node import Node

    from seg_perception.runtime.parameters import ParameterSpec, ParameterValueError, declare_parameters

    context = rclpy.Context()
    rclpy.init(args=['node', '--ros-args', '-p', 'period:=2', '-p', 'late:=100', '-p', 'flag:=3'], context=context)
    try:
        node = Node('integers_for_doubles', context=context)
        values = declare_parameters(node, (ParameterSpec('period', 1.0, 'seconds', value_range=(0.1, 60.0)),))
        assert values == {'period': 2.0} and node.get_parameter('period').type_.name == 'DOUBLE'
        assert node.describe_parameters(['period'])[0].floating_point_range[0].to_value == 60.0
        with pytest.raises(ParameterValueError, match=r"'late' = 100.0 is not allowed; .* in \[0.1, 60.0\]"):
            declare_parameters(node, (ParameterSpec('late', 1.0, 'seconds', value_range=(0.1, 60.0)),))
        with pytest.raises(ParameterValueError, match="'flag' = 3 is not allowed; it takes true or false"):
            declare_parameters(node, (ParameterSpec('flag', True, 'a switch'),))
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_implausible_stamps_give_no_latency_and_are_counted_apart():
    from builtin_interfaces.msg import Time

    from seg_perception.messages.topics import stamp_latency_ms
    from seg_perception.runtime.camera_statistics import CameraStatistics

    now_ns = 1_796_000_000 * 10**9  # December 2026
    assert stamp_latency_ms(now_ns, Time(sec=1_796_000_000 - 1, nanosec=0)) == pytest.approx(1000.0)
    assert stamp_latency_ms(now_ns, Time(sec=1234, nanosec=0)) is None  # time since boot
    assert stamp_latency_ms(now_ns, Time(sec=2**31 + 100, nanosec=0)) is None  # past 2038
    statistics = CameraStatistics(0.0)
    statistics.frame_received(1.0, False)
    statistics.frame_published(1.5, 40.0, 10.0)
    statistics.frame_received(2.0, False)
    statistics.frame_published(2.5, None, 10.0, implausible_stamp=True)
    snapshot = statistics.snapshot(3.0)
    assert (snapshot.latency_p50_ms, snapshot.latency_p95_ms, snapshot.implausible_stamps) == (40.0, 40.0, 1)


def _snapshot(**values):
    from seg_perception.runtime.camera_statistics import StatisticsSnapshot

    fields = dict(input_rate_hz=0.0, output_rate_hz=0.0, latency_p50_ms=None, latency_p95_ms=None,
                  processing_p50_ms=None, frames_received=0, frames_published=0, frames_dropped=0, frames_lost=0,
                  input_errors=0)
    return StatisticsSnapshot(**{**fields, **values})


def test_no_images_is_said_only_of_a_camera_that_is_really_silent():
    from seg_perception.runtime.camera_settings import CameraInputSettings
    from seg_perception.runtime.diagnostics import LARGE_IMAGES_HINT, input_silence_sec, silence_report

    settings = CameraInputSettings(input_timeout_sec=5.0)
    # our answer is awaited (a frame arrived 30 s ago and the model is still on it): not silent
    awaiting = _snapshot(seconds_since_input=30.0, seconds_unanswered=30.0)
    assert input_silence_sec(100.0, 0.0, awaiting) == 0.0
    # a frame refused 20 s ago awaits nothing: the camera has been silent since
    refused = _snapshot(seconds_since_input=20.0, seconds_since_error=20.0, seconds_unanswered=20.0)
    assert input_silence_sec(100.0, 0.0, refused) == 20.0
    # answered 2 s ago, the publisher sends its next frame once answered: not silent
    assert input_silence_sec(100.0, 0.0, _snapshot(seconds_since_input=40.0, seconds_since_output=2.0)) == 2.0
    silent = _snapshot(seconds_since_input=20.0, seconds_since_output=20.0)
    assert input_silence_sec(100.0, 0.0, silent) == 20.0
    # the publisher that was there went away: the camera stopped, no warning
    assert silence_report('/cam', 20.0, settings, 0, True, silent) == (0.0, None, None)
    # no publisher ever: a misnamed topic is worth a warning, without the DDS hint
    _, warning, cause = silence_report('/cam', 20.0, settings, 0, False, silent)
    assert warning == 'no images on /cam for 20 s (0 publishers on it)' and cause is None
    # a publisher matched that has not sent its first frame (a runner waiting for every node): waiting
    assert silence_report('/cam', 20.0, settings, 1, True, silent) == (0.0, None, None)
    # it sent frames, then nothing, nothing counted lost: a silence, without the large-images hint
    stalled = _snapshot(seconds_since_input=20.0, frames_received=30)
    _, warning, cause = silence_report('/cam', 20.0, settings, 1, True, stalled)
    assert warning.startswith('no images on /cam for 20 s (1 publishers') and cause is None
    lost = _snapshot(seconds_since_input=20.0, frames_lost=12)
    _, warning, cause = silence_report('/cam', 20.0, settings, 1, True, lost)
    assert cause == LARGE_IMAGES_HINT and '12 frames lost before the node' in warning


def test_the_engine_cache_lists_json_artifacts_without_phantoms(tmp_path):
    from seg_models.cli import main
    from seg_models.deploy.engine_cache import EngineCache

    cache = EngineCache(tmp_path)
    cache.build('model_auto', '.json', {'candidates': ['onnxruntime']}, lambda path: path.write_text('{}'))
    cache.build('model', '.onnx', {'opset': 17}, lambda path: path.write_bytes(b'onnx'))
    assert [(path.name.split('-')[0], key) for path, key in cache.entries()] == [
        ('model', {'opset': 17}), ('model_auto', {'candidates': ['onnxruntime']})]
    output = subprocess.run([sys.executable, '-m', 'seg_models', 'info', str(tmp_path)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120).stdout
    assert '2 artifact(s)' in output and 'missing' not in output and 'unreadable' not in output, output
    assert main(['info', str(tmp_path / 'nothing_here')]) == 2


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('echo never',))


def test_checkpoint_refusals_say_what_is_wrong(tmp_path):
    from seg_models.checkpoints.reading import CheckpointError, read_state_dict

    (tmp_path / 'empty.pth').write_bytes(b'')
    with open(tmp_path / 'code_protocol_4.pth', 'wb') as stream:
        pickle.dump({'weight': _RunsCode()}, stream, protocol=4)
    torch.save({'weight': torch.ones(2)}, tmp_path / 'legacy_protocol_4.pth', _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    expected = {'empty.pth': r'is empty \(0 bytes\)',
                'code_protocol_4.pth': r'needs code to be unpickled and was refused .*: it names posix\.system$',
                'legacy_protocol_4.pth': r'legacy \(non-zip\) torch file with pickle protocol 4 .* re-save it'}
    for name, words in expected.items():
        with pytest.raises(CheckpointError, match=words):
            read_state_dict(tmp_path / name)


def test_metadata_with_a_zero_std_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from seg_models.segmenters.external_semantic import load_external_model

    graph = helper.make_graph([helper.make_node('Identity', ['images'], ['logits'])], 'g',
                              [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph), tmp_path / 'model.onnx')
    (tmp_path / 'model.yaml').write_text('onnx: model.onnx\nlabel_set: cityscapes\nmean: [0, 0, 0]\n'
                                         'std: [0, 0, 0]\noutput: logits\n')
    with pytest.raises(ValueError, match=r'std \[0, 0, 0\]: every value must be above 0'):
        load_external_model(tmp_path / 'model.yaml')


def _compressed(data: bytes):
    from sensor_msgs.msg import CompressedImage

    return CompressedImage(format='png', data=data)


def test_image_refusals_name_our_limit_and_no_decoder_internals():
    from seg_perception.messages.images import ImageConversionError, compressed_msg_to_rgb

    stream = io.BytesIO()
    PILImage.fromarray(np.zeros((4000, 4000), np.uint8)).save(stream, format='PNG')
    bomb = stream.getvalue()
    assert len(bomb) < 64_000
    with pytest.raises(ImageConversionError, match=r'4000x4000 has 16000000 pixels, above the limit of 1000000$'):
        compressed_msg_to_rgb(_compressed(bomb), max_pixels=1_000_000)
    for data in (b'\xff\xd8 not a jpeg at all', b'\x89PNG\r\n\x1a\n' + bytes(16) + b'IHDR' + bytes(30)):
        with pytest.raises(ImageConversionError) as error:
            compressed_msg_to_rgb(_compressed(data))
        assert 'tjDecompress' not in str(error.value) and ' object at 0x' not in str(error.value), error.value


def test_the_licence_is_the_one_package_xml_names():
    assert (REPO_ROOT / 'LICENSE').read_text().split('\n')[1].strip() == 'Apache License'
    assert '<license>Apache-2.0</license>' in (REPO_ROOT / 'package.xml').read_text()


class _TimedBackend:
    """A backend whose calls take ``seconds`` (the 3rd and 4th call of all, 0.2 s longer: a busy moment
    of the machine), recording the order the candidates are called in."""

    calls: list = []

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds = name, seconds

    def infer(self, images):
        import time

        _TimedBackend.calls.append(self.name)
        time.sleep(self.seconds + (0.2 if len(_TimedBackend.calls) in (3, 4) else 0.0))  # calls 3-4: busy
        return {}


def test_backend_auto_interleaves_candidates_and_takes_medians():
    from seg_models.backends.auto import TIMED_ROUNDS, interleaved_timings

    _TimedBackend.calls = []
    timings = interleaved_timings({'a': _TimedBackend('a', 0.02), 'b': _TimedBackend('b', 0.04)},
                                  np.zeros((1, 3, 4, 4), np.uint8))
    assert _TimedBackend.calls == ['a', 'b'] + ['a', 'b'] * TIMED_ROUNDS  # warm-up, then alternating
    assert timings['a'] < timings['b'] < 100  # the busy moment hit both once; medians ignore it


def test_backend_auto_measures_again_when_old_or_asked(tmp_path):
    import json
    import time

    from seg_models.backends.auto import MAX_AGE_DAYS, _recent_measurement
    from seg_models.deploy.engine_cache import EngineCache

    fresh, old = tmp_path / 'fresh.json', tmp_path / 'old.json'
    fresh.write_text(json.dumps({'chosen': 'onnxruntime', 'timings_ms': {}, 'measured_at': time.time()}))
    old.write_text(json.dumps({'chosen': 'pytorch', 'timings_ms': {}, 'measured_at': time.time() - 86400 * 40}))
    assert _recent_measurement(fresh)['chosen'] == 'onnxruntime'
    with pytest.raises(ValueError, match=f'measured 40 days ago, more than {MAX_AGE_DAYS}'):
        _recent_measurement(old)  # the cache then rebuilds it: the choice is measured again
    cache = EngineCache(tmp_path / 'cache')
    cache.build('graph_auto', '.json', {'k': 1}, lambda path: path.write_text('{}'))
    assert cache.check('graph_auto', '.json', {'k': 1}).reused
    cache.forget('graph_auto', '.json', {'k': 1})  # seg-models build --remeasure
    assert not cache.check('graph_auto', '.json', {'k': 1}).reused and cache.entries() == []


def test_ros_cmake_exports_name_this_clones_venv_not_a_shared_path(tmp_path):
    """Two clones on one machine: nothing of a clone's bootstrap lives outside it (no links under
    /opt/python that the next clone would re-point); the ROS wheels' CMake exports are rewritten to
    the clone's own venv (scripts/localize_ros_cmake.py)."""
    sys.path.insert(0, str(REPO_ROOT / 'scripts'))
    from localize_ros_cmake import BUILD_MACHINE_NUMPY, BUILD_MACHINE_PYTHON, localize

    exports = {}
    for clone in ('first', 'second'):
        cmake = tmp_path / clone / '.venv' / 'share' / 'std_msgs' / 'cmake' / 'export.cmake'
        cmake.parent.mkdir(parents=True)
        cmake.write_text(f'INTERFACE_INCLUDE_DIRECTORIES "{BUILD_MACHINE_PYTHON};{BUILD_MACHINE_NUMPY}"\n')
        assert localize(tmp_path / clone / '.venv') == [cmake]
        exports[clone] = cmake.read_text()
    for clone, text in exports.items():
        assert '/opt/python' not in text and f'{tmp_path / clone}/.venv/lib/python3.11/site-packages/numpy' in text
    commands = [line for line in (REPO_ROOT / 'scripts' / 'bootstrap.sh').read_text().splitlines()
                if not line.lstrip().startswith('#')]
    assert not [line for line in commands if '/opt' in line]
    venv_exports = list((REPO_ROOT / '.venv' / 'share').glob('*/cmake/*rosidl_generator_pyExport.cmake'))
    assert venv_exports and not [path for path in venv_exports if '/opt/python' in path.read_text()]


def test_reports_say_when_the_weights_were_untrained(capsys):
    from seg_models.bench.backend_comparison import BenchRow, print_comparison
    from seg_perception.evaluation.evaluate import untrained_nodes
    from seg_perception.evaluation.fleet_worker import FleetModel
    from seg_perception.evaluation.report import untrained_note

    statuses = {'semantic_segmentation: camera pipeline': {'trained weights': 'true'},
                'instance_segmentation: camera pipeline': {'trained weights': 'false'},
                'instance_segmentation: inference': {'trained weights': 'false'}}
    assert untrained_nodes(statuses) == ['instance_segmentation']
    assert untrained_note(['instance_segmentation']).startswith('UNTRAINED weights (instance_segmentation)')
    model = FleetModel(tasks=('instance',))
    assert model.untrained_tasks() == ['instance']
    assert FleetModel(tasks=('instance',), checkpoints=(('instance_checkpoint', __file__),)).untrained_tasks() == []
    print_comparison([BenchRow('onnxruntime on cpu (fp32)', 10.0, 9.0, 'itself under noise: 100.00% identical', False),
                      BenchRow('onnxruntime on cpu (fp16)', 9.0, 8.0, '100.00% identical pixels', False)], 'semantic')
    assert 'UNTRAINED weights (no --checkpoint)' in capsys.readouterr().out


def test_a_frame_too_large_for_a_camera_size_network_is_refused_before_it_runs():
    from seg_models.configs import SemanticModelConfig, build_config
    from seg_models.segmenters.semantic import CAMERA_SIZE_MAX_PIXELS, create_semantic_segmenter

    camera_size = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='pytorch',
                                                                                   label_set='mapillary_vistas'),
                                                         input_size=None))
    assert camera_size.frame_problem((1080, 1920)) is None
    problem = camera_size.frame_problem((4000, 4000))
    assert problem.startswith('4000x4000 frame not run: the network runs at camera size') and '5.4 GB' in problem
    assert str(CAMERA_SIZE_MAX_PIXELS) in problem
    fixed = create_semantic_segmenter(build_config(SemanticModelConfig, dict(backend='pytorch',
                                                                             label_set='mapillary_vistas'),
                                                   input_size=(64, 96)))
    assert fixed.frame_problem((4000, 4000)) is None  # resized to the network input: any frame runs


def test_the_test_run_uses_the_users_domain_when_set():
    """Run by ``test_a_test_run_leaves_nothing_behind_and_respects_the_user`` with ROS_DOMAIN_ID set."""
    expected = os.environ.get('SEG_TEST_EXPECTED_DOMAIN')
    assert expected is None or os.environ['ROS_DOMAIN_ID'] == expected


def test_a_test_run_leaves_nothing_behind_and_respects_the_user(tmp_path):
    temporary = tmp_path / 'tmp'
    temporary.mkdir()
    env = dict(os.environ, ROS_DOMAIN_ID='42', SEG_TEST_EXPECTED_DOMAIN='42', TMPDIR=str(temporary))
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                             'test/test_first_hour.py::test_the_test_run_uses_the_users_domain_when_set'],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(temporary.glob('seg_models_test_cache_*')), list(temporary.iterdir())


def test_replay_tells_its_nodes_that_frames_are_paced_by_the_answers(tmp_path):
    from seg_perception.evaluation.replay import ReplaySettings, start_pipeline_commands
    from seg_perception.messages.topics import camera_bag_topics

    commands = start_pipeline_commands(tmp_path / 'driving.yaml', [camera_bag_topics('/camera/image_raw')], [], {})
    assert all(f'input_timeout_sec:={ReplaySettings.frame_timeout_sec}' in command for command in commands)
