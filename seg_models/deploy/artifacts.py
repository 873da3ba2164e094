"""The files a backend runs, made once and kept in the engine cache: the ONNX export, its fp16 or
int8 conversion, and the TensorRT engine built from it.

Each artifact is reused while everything recorded in its sidecar (weights, converter, calibration
frames, GPU, TensorRT version, input profile) still matches (seg_models.deploy.engine_cache).
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from seg_models.backends.base import Backend, BackendError
from seg_models.configs import DEFAULT_INPUT_SIZE, BackendSettings
from seg_models.data.frame_sources import image_files, read_rgb
from seg_models.deploy.engine_cache import EngineCache, checked_onnx, file_sha256, module_sha256, onnx_sha256
from seg_models.deploy.export_process import export_in_child_process
from seg_models.deploy.graph import DeploymentGraph
from seg_models.deploy.onnx_export import ONNX_OPSET
from seg_models.deploy.progress import announced
from seg_models.segmenters.transform import CameraTransform

LOGGER = logging.getLogger(__name__)


def onnx_artifact(graph: DeploymentGraph, cache: EngineCache) -> Path:
    """The graph's ONNX file: the user's own, or our export, reused while the weights are unchanged."""
    if graph.onnx_file is not None:
        return graph.onnx_file
    key = {'format': 'onnx', 'opset': ONNX_OPSET, 'torch': torch.__version__,
           'weights_sha256': module_sha256(graph.module), **graph.key}
    path, entry = cache.get_or_build(graph.name, '.onnx', key, functools.partial(_export, graph),
                                     load=checked_onnx)
    LOGGER.info('ONNX model %s (%s)', path, 'reused: ' + entry.reason if entry.reused else entry.reason)
    return path


def _export(graph: DeploymentGraph, path: Path) -> None:
    with announced(f'exporting {graph.name} to ONNX', 'only when the weights or graph change; about a minute for '
                   'Mask R-CNN, 20 s for DeepLabv3+ on a 2-core CPU'):
        export_in_child_process(graph.export, path)


def precision_unavailable_reason(graph: DeploymentGraph, settings: BackendSettings) -> Optional[str]:
    """Why the graph cannot be had at ``settings.precision`` here (fp16/int8 graphs are converted
    from our own fp32 export), or None."""
    if settings.precision == 'fp32':
        return None
    if graph.onnx_file is not None:
        return f'a user-supplied ONNX model runs at its own precision; convert it to {settings.precision} yourself'
    from seg_models.deploy.precision import converter_unavailable_reason

    return converter_unavailable_reason()


def precision_onnx_artifact(graph: DeploymentGraph, settings: BackendSettings, cache: EngineCache) -> Path:
    """The graph at ``settings.precision``: the fp32 export itself, or the fp16 (AutoCast) or int8
    (Q/DQ) graph converted from it, reused while the export, the converter and the calibration
    frames are unchanged (seg_models.deploy.precision)."""
    source = onnx_artifact(graph, cache)
    precision = settings.precision
    if precision == 'fp32':
        return source
    reason = precision_unavailable_reason(graph, settings)
    if reason:
        raise BackendError(reason)
    from seg_models.deploy.precision import CONVERTERS, convert_fp16, modelopt_version, quantize_int8

    files = calibration_image_files(settings) if precision == 'int8' or settings.calibration_images else []
    batch = graph.fixed_batch or 1
    files = files[:max(batch, len(files) // batch * batch)]  # whole batches of a fixed-batch graph
    key = {'format': f'onnx-{precision}', 'source_onnx_sha256': onnx_sha256(source),
           'converter': CONVERTERS[precision],
           'modelopt': modelopt_version(), 'keep_fp32': list(graph.keep_fp32),
           'calibration_images': [f'{path.name}:{file_sha256(path)[:16]}' for path in files] or 'random frames',
           **graph.key}

    def build(path: Path) -> None:  # the frames are read only when the graph is converted, not at each start
        frames = calibration_batch(graph, files)
        with announced(f'converting {source.name} to {precision} with ModelOpt ({len(frames)} frames)',
                       'only when the export or the calibration frames change; a few minutes on a CPU'):
            if precision == 'fp16':
                convert_fp16(source, path, frames[:batch], graph.keep_fp32)
            else:
                quantize_int8(source, path, frames, graph.keep_fp32)

    path, entry = cache.get_or_build(f'{graph.name}_{precision}', '.onnx', key, build, load=checked_onnx)
    LOGGER.info('%s ONNX model %s (%s)', precision, path, 'reused: ' + entry.reason if entry.reused else entry.reason)
    return path


def calibration_batch(graph: DeploymentGraph, files: list[Path]) -> np.ndarray:
    """uint8 batch at the graph's input size for converting it: ``files`` (int8 needs them; fp16
    uses them to find fp16's out-of-range nodes), else seeded random frames; fewer files than a
    fixed-batch graph's batch are filled up with copies."""
    batch = graph.fixed_batch or 1
    size = graph.input_size or DEFAULT_INPUT_SIZE
    if files:
        images = [read_rgb(path) for path in files]
    else:
        LOGGER.warning('fp16 conversion without calibration_images: AutoCast judges fp16 ranges on random frames; '
                       'real frames keep more of the graph in fp16 safely')
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(batch)]
    while len(images) % batch:
        images.append(images[-1])
    return CameraTransform(size).batch(images)


def tensorrt_engine(graph: DeploymentGraph, settings: BackendSettings, cache: EngineCache,
                    load: Callable[[Path, str], Backend]) -> Backend:
    """The TensorRT engine for ``graph`` at ``settings.precision``, built (strongly typed) from its ONNX
    artifact once per GPU model, TensorRT version and input profile, and opened with ``load(path,
    device)``."""
    import tensorrt

    from seg_models.backends.tensorrt import InputShapes, build_engine, gpu_identity

    onnx_path = precision_onnx_artifact(graph, settings, cache)
    height, width = graph.input_size
    if graph.fixed_batch:
        batches = (graph.fixed_batch,) * 3
    else:
        batches = (1, 1, max(1, settings.max_batch))
    shapes = InputShapes(*[(batch, 3, height, width) for batch in batches])
    engine_device = settings.device if settings.device.startswith('cuda') else 'cuda'
    key = {'format': 'tensorrt', 'onnx_sha256': onnx_sha256(onnx_path), 'tensorrt': tensorrt.__version__,
           **gpu_identity(torch.device(engine_device).index or 0), 'strongly_typed': True,
           'precision': settings.precision, 'input_shapes': shapes.as_key(), **graph.key}
    stem = f'{graph.name}_{settings.precision}_{height}x{width}'

    def build(path: Path) -> None:
        require_tensorrt_operators(onnx_path)  # refused in one line before TensorRT's parser sees it
        with announced(f'building the TensorRT engine {path.name}', 'once per GPU model and TensorRT version; '
                       'minutes (`seg-models build` does it ahead of time)'):
            build_engine(onnx_path, path, shapes, show_progress=True)

    backend, entry = cache.get_or_build(
        stem, '.engine', key, build, load=lambda path: load(path, engine_device))
    LOGGER.info('TensorRT engine %s (%s)', entry.path, 'reused' if entry.reused else entry.reason)
    return backend


def require_tensorrt_operators(onnx_path: Path) -> None:
    """Refuse, in one line naming each, a graph with nodes TensorRT's ONNX parser does not take."""
    from seg_models.deploy.tensorrt_operators import unsupported_nodes

    problems = unsupported_nodes(onnx_path)
    if problems:
        raise BackendError(f'{onnx_path.name} would not parse in TensorRT: ' + '; '.join(problems[:5]) +
                           (f' (and {len(problems) - 5} more)' if len(problems) > 5 else ''))


def calibration_image_files(settings: BackendSettings) -> list[Path]:
    """The first ``MAX_CALIBRATION_FRAMES`` images of ``calibration_images`` (sorted); their names and
    hashes go into the converted graph's key."""
    from seg_models.deploy.precision import MAX_CALIBRATION_FRAMES

    folder = settings.calibration_images
    paths = image_files(folder) if folder and Path(folder).is_dir() else []
    if not paths:
        raise BackendError(f'{settings.precision} needs calibration images (calibration_images: a folder of camera '
                           f'frames); none found in {folder!r}')
    return paths[:MAX_CALIBRATION_FRAMES]
