"""Precision lives in the ONNX graph: fp16 by NVIDIA ModelOpt's AutoCast, int8 by ModelOpt's explicit
(Q/DQ) post-training quantization, both from the fp32 export.

TensorRT 11 builds strongly typed networks only (no ``BuilderFlag.FP16/INT8``, no calibrators), and
TensorRT 10 builds them too: a tensor's type is what the graph says. So the converted graphs are the
only place precision is decided, they can be prepared and checked on any machine (``seg-models build
--onnx-only``), and ONNX Runtime runs exactly what TensorRT will build.

* fp16: AutoCast keeps in fp32 the nodes whose values on real frames leave fp16's safe range (or
  that a graph names, ``keep_fp32``), inserts the casts, and leaves the uint8 image input and the
  outputs in their types.
* int8: ModelOpt's ONNX PTQ inserts QuantizeLinear/DequantizeLinear pairs with scales calibrated
  by running the graph in ONNX Runtime on the CPU over the calibration frames, with the entropy
  method (KL divergence of each activation histogram: robust to the long-tailed ReLU activations
  of segmentation networks, where max calibration spends the int8 range on rare outliers). The
  rest of the graph, the Q/DQ scales included, stays fp32. Measured on the DeepLabv3+ fitted to
  CamVid (test_precision.py), identical pixels to fp32: 98.3% so; 78.7% with ModelOpt's fp16
  "high precision" (per-channel weight scales below fp16's normal range lose their precision);
  87.6% with max calibration.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from seg_models.deploy.onnx_export import INPUT_NAME, METADATA_PREFIX, checked_graph, without_intermediate_shapes

LOGGER = logging.getLogger(__name__)

CALIBRATION_METHOD = 'entropy'
# What made a converted graph: part of its cache key, so a change of method rebuilds it.
CONVERTERS = {'fp16': 'modelopt autocast',
              'int8': f'modelopt int8 ptq, {CALIBRATION_METHOD} calibration, fp32 elsewhere'}
MAX_CALIBRATION_FRAMES = 32  # calibration runs the fp32 graph on the CPU once per frame


def modelopt_version() -> str:
    """The converter's version, part of every converted artifact's key."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version('nvidia-modelopt')
    except PackageNotFoundError:
        return ''


def converter_unavailable_reason() -> Optional[str]:
    """Why fp16/int8 graphs cannot be made here, or None."""
    if not modelopt_version():
        return 'NVIDIA ModelOpt (nvidia-modelopt) is not installed; it converts the graph to fp16 or int8'
    return None


@contextlib.contextmanager
def _quiet_modelopt() -> Iterator[None]:
    """ModelOpt logs every node it considers at INFO: keep its own log at WARNING for the duration."""
    loggers = [logging.getLogger(name) for name in ('modelopt', 'modelopt.onnx', 'modelopt.onnx.autocast')]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def convert_fp16(source: Path, target: Path, reference_inputs: np.ndarray, keep_fp32: Sequence[str] = ()) -> None:
    """Write ``source`` (an fp32 graph) as a mixed fp16/fp32 graph to ``target`` with AutoCast.

    ``reference_inputs`` (a batch the graph accepts) are run through the fp32 graph to find the
    nodes whose values overflow fp16; ``keep_fp32`` are regular expressions of node names that
    stay fp32 whatever their range (detection post-processing: box coordinates and score order).
    """
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory(prefix='seg_models_autocast_') as folder, _quiet_modelopt():
        inputs = Path(folder) / 'reference_inputs.npz'
        np.savez(inputs, **{INPUT_NAME: reference_inputs})
        model = convert_to_mixed_precision(onnx_path=str(source), low_precision_type='fp16', keep_io_types=True,
                                           calibration_data=str(inputs), nodes_to_exclude=list(keep_fp32) or None)
    _save_converted(model, source, target, 'fp16')


def quantize_int8(source: Path, target: Path, calibration: np.ndarray, keep_fp32: Sequence[str] = ()) -> None:
    """Write ``source`` (an fp32 graph) as an explicitly quantized graph (Q/DQ nodes) to ``target``,
    calibrated with ``CALIBRATION_METHOD`` on ``calibration`` (uint8 frames, N x 3 x H x W) through
    ONNX Runtime on the CPU; ``keep_fp32`` node-name patterns are neither quantized nor cast."""
    import onnx
    from modelopt.onnx.quantization import quantize

    with tempfile.TemporaryDirectory(prefix='seg_models_quantize_') as folder, _quiet_modelopt():
        output = Path(folder) / 'quantized.onnx'
        quantize(str(source), quantize_mode='int8', calibration_data={INPUT_NAME: calibration},
                 calibration_method=CALIBRATION_METHOD, calibration_eps=['cpu'], high_precision_dtype='fp32',
                 nodes_to_exclude=list(keep_fp32) or None, output_path=str(output), log_level='WARNING')
        model = onnx.load(str(output))
    _save_converted(model, source, target, 'int8')


def _save_converted(converted, source: Path, target: Path, precision: str) -> None:
    """Save the converted graph to ``target``, checked, without the converter's recorded
    intermediate shapes, with the export's ``seg_models.*`` metadata and its precision."""
    import json

    import onnx

    exported = onnx.load(str(source), load_external_data=False)
    props = {prop.key: prop.value for prop in exported.metadata_props if prop.key.startswith(METADATA_PREFIX)}
    props[METADATA_PREFIX + 'precision'] = json.dumps(precision)
    del converted.metadata_props[:]
    for key, value in props.items():
        converted.metadata_props.add(key=key, value=value)
    onnx.save(checked_graph(without_intermediate_shapes(converted)), str(target))
