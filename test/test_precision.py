"""Precision in the ONNX graph, checked on the CPU: fp16 (ModelOpt AutoCast) and int8 (Q/DQ, ModelOpt
PTQ calibrated on real frames) graphs run in ONNX Runtime and answer like fp32 on networks fitted to
real driving frames; every deployment graph at every precision is one TensorRT's ONNX parser takes;
folding constants changes no answer; the converted graphs are cache artifacts."""
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from fitted_models import (CAMVID, CAMVID_VOID, FIT_SIZE, camvid_available, camvid_frames)
from seg_models.backends.onnxruntime import OnnxRuntimeBackend
from seg_models.configs import InstanceFilter, InstanceModelConfig, SemanticModelConfig, build_config
from seg_models.bench import fidelity
from seg_models.bench.fidelity import SENSOR_NOISE_GREY_LEVELS, identical_pixels, instance_agreement, with_sensor_noise
from seg_models.segmenters.instance import create_instance_segmenter
from seg_models.segmenters.semantic import create_semantic_segmenter
from seg_models.deploy.tensorrt_operators import unsupported_nodes

pytestmark = pytest.mark.slow
needs_camvid = pytest.mark.skipif(not camvid_available(), reason=f'needs the CamVid frames in {CAMVID}')
SCORE_THRESHOLD = 0.5
SENSOR_NOISE = f'fp32 under {fidelity.SENSOR_NOISE}'


def calibration_folder(folder, size=(360, 480), count=4):
    """Real driving frames (CamVid where ../shared has it) written as a calibration folder."""
    import cv2

    from shared_data import driving_frames

    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(driving_frames(count, size=size)):
        cv2.imwrite(str(folder / f'{index:03d}.png'), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def converted(cache, precision):
    """The converted graph of ``precision`` in ``cache`` (one model per cache)."""
    found = [path for path in cache.glob(f'*_{precision}-*.onnx')]
    assert len(found) == 1, sorted(path.name for path in cache.iterdir())
    return found[0]


# --- every graph TensorRT would parse --------------------------------------------------------------

GRAPH_VARIANTS = {  # every kind of deployment graph: both tasks, both encoder families, both outputs
    'semantic': (SemanticModelConfig, create_semantic_segmenter, {}),
    'semantic_resnet50_confidence_mapillary': (SemanticModelConfig, create_semantic_segmenter, dict(
        architecture='deeplabv3plus_resnet50', with_confidence=True, label_set='mapillary_vistas')),
    'instance': (InstanceModelConfig, create_instance_segmenter, {}),
}


@pytest.mark.parametrize('variant', list(GRAPH_VARIANTS))
def test_every_deployment_graph_at_every_precision_would_parse_in_tensorrt(variant, tmp_path):
    from shared_data import driving_frames

    calibration = calibration_folder(tmp_path / 'frames')
    cache = tmp_path / 'cache'
    config_type, create, settings = GRAPH_VARIANTS[variant]
    frames = driving_frames(3)
    for precision in ('fp32', 'fp16', 'int8'):  # each graph runs in ONNX Runtime on the CPU
        segmenter = create(build_config(config_type, dict(
            backend='onnxruntime', precision=precision, input_size=(128, 256), engine_dir=str(cache),
            calibration_images=str(calibration), **settings)))
        assert len(segmenter.segment(frames)) == len(frames)
    graphs = sorted(cache.glob('*.onnx'))
    assert len(graphs) == 3, [path.name for path in graphs]
    for path in graphs:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        assert unsupported_nodes(model) == [], path.name
        assert not [node for node in model.graph.node if node.op_type == 'If'], 'no If subgraphs (export.py)'
    int8 = onnx.load(str(converted(cache, 'int8')))
    assert sum(node.op_type == 'QuantizeLinear' for node in int8.graph.node) >= 20
    fp16 = onnx.load(str(converted(cache, 'fp16')))
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer) >= 20
    for model in (int8, fp16):  # the image input and the outputs keep their types
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    helper = onnx.helper
    graph = helper.make_graph(nodes, 'g', inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])


def _value(name, element_type, shape):
    return onnx.helper.make_tensor_value_info(name, element_type, shape)


FLOAT, UINT8, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8, onnx.TensorProto.INT64


def _topk(k):
    return _graph([onnx.helper.make_node('TopK', ['x', 'k'], ['values', 'indices'], name='topk')],
                  [_value('x', FLOAT, [8000])], [_value('values', FLOAT, [k]), _value('indices', INT64, [k])],
                  [onnx.numpy_helper.from_array(np.array([k], np.int64), 'k')])


def test_the_operator_table_refuses_what_tensorrt_would_refuse():
    make = onnx.helper.make_node
    accepted = _graph([make('Cast', ['image'], ['as_float'], to=FLOAT), make('Relu', ['as_float'], ['out'])],
                      [_value('image', UINT8, [1, 3, 4, 4])], [_value('out', FLOAT, [1, 3, 4, 4])])
    assert unsupported_nodes(accepted) == []
    assert 'K = 3840 (must be less than 3840)' in unsupported_nodes(_topk(3840))[0]
    assert unsupported_nodes(_topk(1000)) == []
    dynamic_k = _graph([make('TopK', ['x', 'k'], ['v', 'i'], name='topk')],
                       [_value('x', FLOAT, [100]), _value('k', INT64, [1])], [_value('v', FLOAT, [None]),
                                                                               _value('i', INT64, [None])])
    assert 'K is not a build-time constant' in unsupported_nodes(dynamic_k)[0]
    unique = _graph([make('Unique', ['x'], ['y'], name='unique')], [_value('x', FLOAT, [4])],
                    [_value('y', FLOAT, [None])])
    assert unsupported_nodes(unique) == ["unique (Unique): operator not supported by TensorRT's ONNX parser"]
    cubic = _graph([make('Resize', ['x', '', 'scales'], ['y'], name='resize', mode='cubic')],
                   [_value('x', FLOAT, [1, 1, 4, 4])], [_value('y', FLOAT, [1, 1, 8, 8])],
                   [onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), 'scales')])
    assert 'mode cubic' in unsupported_nodes(cubic)[0]
    inner_uint8 = _graph([make('Cast', ['x'], ['small'], to=UINT8), make('Cast', ['small'], ['y'], to=FLOAT)],
                         [_value('x', FLOAT, [4])], [_value('y', FLOAT, [4])])
    assert unsupported_nodes(inner_uint8) == ['tensor small: UINT8 is supported only as a network input or output']
    pool_1d = _graph([make('MaxPool', ['x'], ['y'], name='pool', kernel_shape=[2])], [_value('x', FLOAT, [1, 1, 8])],
                     [_value('y', FLOAT, [1, 1, 7])])
    assert '1D pooling' in unsupported_nodes(pool_1d)[0]
    shifted = _graph([make('QuantizeLinear', ['x', 'scale', 'zero'], ['q'], name='quantize'),
                      make('DequantizeLinear', ['q', 'scale', 'zero'], ['y'], name='dequantize')],
                     [_value('x', FLOAT, [4])], [_value('y', FLOAT, [4])],
                     [onnx.numpy_helper.from_array(np.array(0.1, np.float32), 'scale'),
                      onnx.numpy_helper.from_array(np.array(3, np.int8), 'zero')])
    assert [line.split(':')[0] for line in unsupported_nodes(shifted)] == ['quantize (QuantizeLinear)',
                                                                            'dequantize (DequantizeLinear)']
    assert unsupported_nodes(_graph(accepted.graph.node, accepted.graph.input, accepted.graph.output,
                                    opset=25))[0].startswith('opset 25')


# --- folding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('task', ['semantic', 'instance'])
def test_constant_folding_keeps_every_onnx_runtime_answer(task, tmp_path):
    from shared_data import driving_frames
    from seg_models.deploy.onnx_export import checked_graph, fold_constants, trace_onnx
    from seg_models.segmenters.instance import instance_deployment
    from seg_models.segmenters.semantic import semantic_deployment
    from seg_models.segmenters.transform import CameraTransform

    size = (128, 256)
    if task == 'semantic':
        deployment = semantic_deployment(build_config(SemanticModelConfig, dict(input_size=size)))[0]
    else:
        deployment = instance_deployment(build_config(InstanceModelConfig, dict(
            input_size=size, output_filter=InstanceFilter(score_threshold=0.05))))[0]
    traced = trace_onnx(deployment.module, tmp_path / 'traced.onnx', torch.zeros((1, 3, *size), dtype=torch.uint8),
                        deployment.output_names, {})
    folded = checked_graph(fold_constants(onnx.load(str(traced))))
    onnx.save(folded, str(tmp_path / 'folded.onnx'))
    assert len(folded.graph.node) < len(onnx.load(str(traced)).graph.node)
    batch = CameraTransform(size).batch(driving_frames(3)[-1:])
    before = OnnxRuntimeBackend(traced).infer(batch)
    after = OnnxRuntimeBackend(tmp_path / 'folded.onnx').infer(batch)
    for name in deployment.output_names:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, atol=1e-5, err_msg=name)
    if task == 'instance':
        assert before['num_detections'][0] > 0


# --- fidelity on fitted networks -------------------------------------------------------------------

def _box_instance(class_id: int, score: float, box: tuple[int, int, int, int]):
    from seg_models.segmenters.instance_postprocess import Instance

    x1, y1, x2, y2 = box
    return Instance(class_id=class_id, class_name=str(class_id), score=score, box=box, roi=(x1, y1, x2 - x1, y2 - y1),
                    mask=np.ones((y2 - y1, x2 - x1), bool))


def test_instance_agreement_matches_within_a_class_and_forgives_only_borderline_scores():
    from seg_models.segmenters.instance_postprocess import InstanceResult

    reference = InstanceResult((100, 100), [_box_instance(1, 0.9, (0, 0, 20, 20)),
                                            _box_instance(1, 0.9, (50, 50, 70, 70)),
                                            _box_instance(2, 0.9, (0, 50, 40, 90)),  # other's is class 1
                                            _box_instance(1, 0.52, (80, 0, 100, 20))])  # borderline, lost
    other = InstanceResult((100, 100), [_box_instance(1, 0.8, (50, 50, 70, 72)),
                                        _box_instance(1, 0.95, (0, 0, 20, 20)),
                                        _box_instance(1, 0.9, (0, 50, 40, 90))])
    agreement = instance_agreement([reference], [other], score_threshold=0.5)
    assert (agreement.reference, agreement.matched, agreement.missing, agreement.extra) == (4, 2, 1, 1)
    assert sorted(agreement.box_ious) == pytest.approx([400 / 440, 1.0])
    assert agreement.min_box_iou == agreement.min_mask_iou == pytest.approx(400 / 440)
    assert not agreement.within_instance_bounds()
    assert agreement.describe() == ('2/4 detections matched, 1 missing, 1 extra, box IoU >= 0.909 (median 0.955), '
                                    'mask IoU >= 0.909 (median 0.955)')
    same = instance_agreement([reference], [reference], score_threshold=0.5)
    assert same.within_instance_bounds() and same.matched == 4


def test_sensor_noise_is_a_few_grey_levels_and_the_same_each_time():
    frames = [np.full((6, 8, 3), value, np.uint8) for value in (0, 128, 255)]
    noisy = with_sensor_noise(frames)
    differences = np.stack([image.astype(int) - frame for image, frame in zip(noisy, frames)])
    assert np.abs(differences).max() == SENSOR_NOISE_GREY_LEVELS
    assert differences[0].min() == 0 and differences[2].max() == 0  # clipped, not wrapped
    assert np.count_nonzero(differences[1]) > differences[1].size // 2
    assert all(np.array_equal(a, b) for a, b in zip(noisy, with_sensor_noise(frames)))


def results_by_precision(segmenter, frames):
    """Each precision's answers on ``frames`` (``segmenter(precision)`` makes its segmenter), and
    fp32's on them with sensor noise (``SENSOR_NOISE``)."""
    segmenters = {precision: segmenter(precision) for precision in ('fp32', 'fp16', 'int8')}
    results = {precision: each.segment(frames) for precision, each in segmenters.items()}
    results[SENSOR_NOISE] = segmenters['fp32'].segment(with_sensor_noise(frames))
    return results


@needs_camvid
def test_fp16_and_int8_semantic_graphs_answer_like_fp32(fitted_semantic, camvid_frames_full, tmp_path, capsys):
    def segmenter(precision):
        return create_semantic_segmenter(build_config(SemanticModelConfig, dict(
            checkpoint=str(fitted_semantic), label_set='camvid', input_size=FIT_SIZE, backend='onnxruntime',
            precision=precision, engine_dir=str(tmp_path), calibration_images=str(CAMVID / 'images'))))

    results = results_by_precision(segmenter, camvid_frames_full)
    truths = [labels for _, labels in camvid_frames(size=(360, 480))]
    accuracy = np.mean([(result.class_ids == truth)[truth != CAMVID_VOID].mean()
                        for result, truth in zip(results['fp32'], truths)])
    classes = np.unique(np.concatenate([r.class_ids.ravel() for r in results['fp32']]))
    fp16, int8 = (identical_pixels(results['fp32'], results[p]) for p in ('fp16', 'int8'))
    with capsys.disabled():
        print(f'\nDeepLabv3+ fitted to CamVid: pixel accuracy {accuracy:.3f}, {len(classes)} classes; identical '
              f'pixels to fp32: fp16 {100 * fp16:.2f}%, int8 {100 * int8:.2f}%, {SENSOR_NOISE} '
              f'{100 * identical_pixels(results["fp32"], results[SENSOR_NOISE]):.2f}%')
    assert accuracy > 0.6 and len(classes) >= 5, 'the fitted network must answer like a real one'
    assert fp16 >= 0.995
    assert int8 >= 0.97


@pytest.fixture(scope='module')
def instance_agreements(fitted_instance, camvid_frames_full, tmp_path_factory):
    """fp16 and int8 Mask R-CNN graphs against fp32, all in ONNX Runtime, on the 20 CamVid frames."""
    cache = tmp_path_factory.mktemp('instance_cache')

    def segmenter(precision):
        return create_instance_segmenter(build_config(InstanceModelConfig, dict(
            checkpoint=str(fitted_instance), input_size=FIT_SIZE, backend='onnxruntime', precision=precision,
            engine_dir=str(cache), calibration_images=str(CAMVID / 'images'),
            output_filter=InstanceFilter(score_threshold=SCORE_THRESHOLD))))

    results = results_by_precision(segmenter, camvid_frames_full)
    agreements = {name: instance_agreement(results['fp32'], results[name], SCORE_THRESHOLD)
                  for name in ('fp16', 'int8', SENSOR_NOISE)}
    for name, agreement in agreements.items():
        print(f'\nMask R-CNN fitted to CamVid, {name} against fp32: {agreement.describe()}')
    return agreements


@needs_camvid
def test_fp16_instance_graph_keeps_the_detections(instance_agreements):
    """Our own guard (issue 13 sets no fp16 instance bound): fp16 changes at most one detection in
    ten and moves boxes and masks no more than +-1 grey-level of sensor noise does. The fitted network
    differs between environments, so a borderline detection may flip either way (measured: 18/19
    with none extra; 23/24 with one extra, box IoU median 0.995 against 0.92 under noise)."""
    fp16, noise = instance_agreements['fp16'], instance_agreements[SENSOR_NOISE]
    assert fp16.reference >= 10, 'the fitted network must find instances'
    assert fp16.matched >= 0.9 * fp16.reference and fp16.missing + fp16.extra <= 0.1 * fp16.reference, \
        fp16.describe()
    assert fp16.median_box_iou >= noise.median_box_iou and fp16.median_mask_iou >= noise.median_mask_iou, \
        f'fp16: {fp16.describe()}; {SENSOR_NOISE}: {noise.describe()}'


@needs_camvid
def test_sensor_noise_keeps_most_fp32_detections(instance_agreements):
    """The yardstick is noise a camera makes anyway, so most detections survive it (measured: 18
    of 19, box IoU median 0.92); how far their boxes move is what int8 is compared with."""
    noise = instance_agreements[SENSOR_NOISE]
    assert noise.reference >= 10 and noise.matched >= 0.8 * noise.reference, noise.describe()


@needs_camvid
@pytest.mark.xfail(strict=True, reason='int8 Mask R-CNN misses the bounds (measured: 19/24 matched, 4 missing, '
                                       '7 extra, box IoU >= 0.60, mask IoU >= 0.64), and so does this fitted '
                                       'network against itself under +-1 grey-level noise (23/24, 3 extra, '
                                       'box IoU >= 0.67); calibration, partial quantization and longer '
                                       'fits no better (README): issue 13 is blocked on a trained Mask R-CNN')
def test_int8_instance_graph_finds_the_same_instances(instance_agreements):
    int8 = instance_agreements['int8']
    assert int8.within_instance_bounds(), int8.describe()


# --- cache and CLI ---------------------------------------------------------------------------------

def test_converted_graphs_are_reused_and_rebuilt_when_the_calibration_frames_change(tmp_path, caplog):
    caplog.set_level('INFO')
    frames = calibration_folder(tmp_path / 'frames')
    config = build_config(SemanticModelConfig, dict(input_size=(64, 128), backend='onnxruntime', precision='int8',
                                                    engine_dir=str(tmp_path / 'cache'),
                                                    calibration_images=str(frames)))
    create_semantic_segmenter(config)
    assert re.search(r'int8 ONNX model .*_int8-[0-9a-f]{12}\.onnx \(built: no cached artifact\)', caplog.text)
    caplog.clear()
    create_semantic_segmenter(config)
    assert 'int8 ONNX model' in caplog.text and 'reused: cached artifact matches' in caplog.text
    caplog.clear()
    (frames / '003.png').unlink()
    create_semantic_segmenter(config)
    assert re.search(r'int8 ONNX model .*built: inputs changed \(calibration_images', caplog.text)


def test_int8_without_calibration_frames_is_refused_in_one_line(tmp_path):
    from seg_models.backends.base import BackendError

    with pytest.raises(BackendError, match=r'int8 needs calibration images \(calibration_images'):
        create_semantic_segmenter(build_config(SemanticModelConfig, dict(
            input_size=(64, 128), backend='onnxruntime', precision='int8', engine_dir=str(tmp_path))))


@pytest.mark.skipif(__import__('importlib').util.find_spec('tensorrt') is not None, reason='TensorRT is installed')
def test_onnx_only_prepares_the_int8_graph_for_tensorrt_anywhere(tmp_path):
    frames = calibration_folder(tmp_path / 'frames')
    common = ['--backend', 'tensorrt', '--precision', 'int8', '--input-size', '64', '128',
              '--engine-dir', str(tmp_path / 'cache'), '--calibration-images', str(frames)]
    without = subprocess.run([sys.executable, '-m', 'seg_models', 'build', *common], capture_output=True, text=True,
                             timeout=600)
    assert without.returncode == 1 and 'Traceback' not in without.stderr
    assert without.stderr.strip().splitlines()[-1] == ('seg-models build: the tensorrt backend cannot run this model: '
                                                       'the tensorrt Python module is not installed')
    done = subprocess.run([sys.executable, '-m', 'seg_models', 'build', *common, '--onnx-only'], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert 'ready: int8 ONNX graph' in done.stdout and 'every node is one TensorRT parses' in done.stdout
    model = onnx.load(str(converted(tmp_path / 'cache', 'int8')))
    assert any(node.op_type == 'DequantizeLinear' for node in model.graph.node)
    assert unsupported_nodes(model) == []


def test_tensorrt_older_than_10_is_refused_by_name():
    from seg_models.backends.tensorrt import tensorrt_version_problem

    assert 'TensorRT 8.6.1 is too old' in tensorrt_version_problem('8.6.1')
    assert tensorrt_version_problem('10.13.3.9') is None and tensorrt_version_problem('11.4.0') is None
    assert 'unreadable version' in tensorrt_version_problem('unknown')


def test_bench_prints_each_precision_with_its_agreement_to_fp32(tmp_path):
    frames = calibration_folder(tmp_path / 'frames')
    done = subprocess.run([sys.executable, '-m', 'seg_models', 'bench', '--backends', 'onnxruntime', '--precisions',
                           'fp32', 'fp16', 'int8', '--input-size', '64', '128', '--iterations', '1', '--warmup', '0',
                           '--calibration-images', str(frames), '--frames', str(frames), '--batch-size', '2',
                           '--engine-dir', str(tmp_path / 'cache')], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[3].strip('()'): line for line in done.stdout.splitlines() if line.startswith('onnxruntime')}
    assert set(rows) == {'fp32', 'fp16', 'int8'}, done.stdout
    for precision, prefix in (('fp32', r'itself under \+-1 grey-level noise: '), ('fp16', ''), ('int8', '')):
        share = float(re.search(prefix + r'([\d.]+)% identical pixels', rows[precision]).group(1))
        assert 0 < share <= 100
