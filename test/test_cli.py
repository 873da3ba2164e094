"""The seg-models CLI as users run it: a separate process, real files, real output."""
import re
import subprocess
import sys

import numpy as np
import pytest

from seg_models.backends.onnxruntime import OnnxRuntimeBackend

pytestmark = pytest.mark.slow


def seg_models(*args, cache=None):
    env = None
    if cache is not None:
        import os

        env = {**os.environ, 'SEG_MODELS_CACHE_DIR': str(cache)}
    return subprocess.run([sys.executable, '-m', 'seg_models', *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def test_export_then_info_describes_the_file(deeplabv3plus_checkpoint, tmp_path):
    output = tmp_path / 'semantic.onnx'
    done = seg_models('export', '--checkpoint', deeplabv3plus_checkpoint, '--input-size', 64, 96, '--confidence',
                      '--output', output)
    assert done.returncode == 0, done.stderr
    outputs = OnnxRuntimeBackend(output).infer(np.zeros((2, 3, 64, 96), np.uint8))
    assert outputs['class_ids'].shape == (2, 64, 96) and outputs['confidence'].dtype == np.float32
    info = seg_models('info', output)
    assert info.returncode == 0, info.stderr
    assert 'input images: UINT8' in info.stdout and 'label_set: "cityscapes"' in info.stdout


def test_build_fills_the_cache_that_nodes_reuse(deeplabv3plus_checkpoint, tmp_path):
    cache = tmp_path / 'cache'
    built = seg_models('build', '--checkpoint', deeplabv3plus_checkpoint, '--backend', 'onnxruntime',
                       '--input-size', 64, 96, '--engine-dir', cache, '--verbose')
    assert built.returncode == 0, built.stderr
    # stem-<key digest>; on the CPU the graph ends at the logits (seg_models.models.semantic_graph)
    artifact = r'deeplabv3plus_mobilenet_v3_large_os16_cityscapes_logits-[0-9a-f]{12}\.onnx'
    assert re.search(f'building {artifact}: no cached artifact', built.stderr), built.stderr
    again = seg_models('build', '--checkpoint', deeplabv3plus_checkpoint, '--backend', 'onnxruntime',
                       '--input-size', 64, 96, '--engine-dir', cache, '--verbose')
    assert again.returncode == 0 and 'reused: cached artifact matches' in again.stderr
    info = seg_models('info', cache)
    assert '1 artifact(s)' in info.stdout and 'weights_sha256' in info.stdout


def test_bench_prints_a_table_with_ratios(deeplabv3plus_checkpoint):
    done = seg_models('bench', '--checkpoint', deeplabv3plus_checkpoint, '--input-size', 64, 96, '--iterations', 2,
                      '--warmup', 1, '--backends', 'pytorch', 'onnxruntime')
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(('pytorch', 'onnxruntime'))]
    assert len(lines) == 2, done.stdout
    ratios = [re.search(r' ([\d.]+)x  ', line) for line in lines]
    assert ratios[0] and ratios[0].group(1) == '1.00' and ratios[1] and float(ratios[1].group(1)) > 0, done.stdout
    assert all(re.search(r'itself under \+-1 grey-level noise: [\d.]+% identical pixels$', line) for line in lines)


def test_errors_are_one_line_and_exit_non_zero(tmp_path):
    corrupt = tmp_path / 'broken.pth'
    corrupt.write_bytes(b'garbage')
    done = seg_models('build', '--checkpoint', corrupt, '--backend', 'onnxruntime')
    assert done.returncode == 1 and f'checkpoint {corrupt} is corrupt' in done.stderr
    assert 'Traceback' not in done.stderr


@pytest.mark.skipif(__import__('importlib').util.find_spec('tensorrt') is not None, reason='TensorRT is installed')
def test_tensorrt_build_without_tensorrt_says_why(deeplabv3plus_checkpoint):
    done = seg_models('build', '--checkpoint', deeplabv3plus_checkpoint, '--backend', 'tensorrt',
                      '--input-size', 64, 96)
    assert done.returncode == 1 and 'tensorrt Python module is not installed' in done.stderr
