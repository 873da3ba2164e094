"""Choosing and creating a backend for a deployment graph, with artifacts kept in the engine cache.

Semantic and instance models share this path: a ``DeploymentGraph`` says how to export itself and
what its artifacts depend on; ``create_backend`` turns it into a PyTorch, ONNX Runtime or TensorRT
backend, reusing cached ONNX files and engines whose recorded inputs still match.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from seg_models.backends.base import Backend, BackendError
from seg_models.configs import BACKENDS, BackendSettings
from seg_models.engine_cache import EngineCache, checked_onnx, module_sha256, onnx_sha256
from seg_models.export import ONNX_OPSET
from seg_models.frame_sources import image_files, read_rgb

LOGGER = logging.getLogger(__name__)


@dataclass
class DeploymentGraph:
    """A model ready to deploy: the graph, how to export it, and what its artifacts depend on."""

    name: str  # artifact stem, e.g. "deeplabv3plus_resnet50_os16_cityscapes"
    output_names: tuple[str, ...]
    key: dict  # label set, normalisation, graph options: recorded in every artifact's sidecar
    module: Optional[nn.Module] = None  # None for a user-supplied ONNX file
    export: Optional[Callable[[Path], None]] = None
    onnx_file: Optional[Path] = None  # a user-supplied ONNX file, used as it is
    input_size: Optional[tuple[int, int]] = None  # fixed (H, W), None: dynamic
    fixed_batch: Optional[int] = None  # batch size baked into the graph, None: dynamic
    cpu_memory_arena: bool = True  # ONNX Runtime's arena pays where shapes are static (backends/onnxruntime.py)


def create_backend(graph: DeploymentGraph, settings: BackendSettings) -> Backend:
    """A ready backend for ``graph``: the one asked for, or with ``auto`` the one measured fastest
    here (seg_models.backends.auto); which one and why is logged."""
    if settings.backend not in BACKENDS:
        raise BackendError(f'unknown backend {settings.backend!r}; available: {", ".join(BACKENDS)}')
    cache = EngineCache(settings.engine_dir or None)
    if settings.backend != 'auto':
        LOGGER.info('backend %s: requested', settings.backend)
        return named_backend(settings.backend, graph, settings, cache)
    from seg_models.backends.auto import measured_backend

    backend, reason = measured_backend(graph, settings, cache,
                                       lambda name: named_backend(name, graph, settings, cache))
    LOGGER.info('backend auto: %s, %s', backend.name, reason)
    return backend


def unusable_reason(name: str, graph: DeploymentGraph, settings: BackendSettings) -> Optional[str]:
    """Why backend ``name`` cannot run ``graph`` with ``settings`` here, or None where it can: asked
    before creating one, so an explicit choice is refused with the reason and ``auto`` skips it."""
    if name == 'pytorch':
        return 'a user-supplied ONNX model has no PyTorch module' if graph.module is None else None
    if name == 'onnxruntime':
        if importlib.util.find_spec('onnxruntime') is None:
            return 'onnxruntime is not installed'
        return f'it runs fp32 only, not {settings.precision}' if settings.precision != 'fp32' else None
    from seg_models.backends.tensorrt import tensorrt_unavailable_reason

    missing = tensorrt_unavailable_reason()
    if missing is None and graph.input_size is None:
        missing = ('the model has no fixed input size (TensorRT engines are built for one: set input_height and '
                   'input_width)')
    return missing


def named_backend(name: str, graph: DeploymentGraph, settings: BackendSettings, cache: EngineCache) -> Backend:
    """The backend ``name`` (pytorch, onnxruntime, tensorrt) for ``graph``, its artifacts in ``cache``."""
    reason = unusable_reason(name, graph, settings)
    if reason:
        raise BackendError(f'the {name} backend cannot run this model: {reason}')
    if name == 'pytorch':
        from seg_models.backends.pytorch import PyTorchBackend

        return PyTorchBackend(graph.module, graph.output_names, device=settings.device,
                              precision=settings.precision)
    if name == 'onnxruntime':
        from seg_models.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_artifact(graph, cache), device=settings.device,
                                  memory_arena=graph.cpu_memory_arena)
    return _tensorrt_backend(graph, settings, cache)


def onnx_artifact(graph: DeploymentGraph, cache: EngineCache) -> Path:
    """The graph's ONNX file: the user's own, or our export, reused while the weights are unchanged."""
    if graph.onnx_file is not None:
        return graph.onnx_file
    key = {'format': 'onnx', 'opset': ONNX_OPSET, 'torch': torch.__version__,
           'weights_sha256': module_sha256(graph.module), **graph.key}
    path, entry = cache.get_or_build(graph.name, '.onnx', key, graph.export, load=checked_onnx)
    LOGGER.info('ONNX model %s (%s)', path, 'reused: ' + entry.reason if entry.reused else entry.reason)
    return path


def _tensorrt_backend(graph: DeploymentGraph, settings: BackendSettings, cache: EngineCache) -> Backend:
    import tensorrt

    from seg_models.backends.tensorrt import (InputShapes, TensorRTBackend, build_engine, entropy_calibrator,
                                              gpu_identity)

    onnx_path = onnx_artifact(graph, cache)
    height, width = graph.input_size
    if graph.fixed_batch:
        batches = (graph.fixed_batch,) * 3
    else:
        batches = (1, 1, max(1, settings.max_batch))
    shapes = InputShapes(*[(batch, 3, height, width) for batch in batches])
    engine_device = settings.device if settings.device.startswith('cuda') else 'cuda'
    key = {'format': 'tensorrt', 'onnx_sha256': onnx_sha256(onnx_path), 'tensorrt': tensorrt.__version__,
           **gpu_identity(torch.device(engine_device).index or 0),
           'precision': settings.precision, 'input_shapes': shapes.as_key(), **graph.key}
    stem = f'{graph.name}_{settings.precision}_{height}x{width}'

    calibration_files = calibration_image_files(settings.calibration_images) if settings.precision == 'int8' else []
    if calibration_files:
        key['calibration_images'] = [path.name for path in calibration_files]

    def build(path: Path) -> None:
        calibrator = None
        if calibration_files:
            images = [read_rgb(path) for path in calibration_files]
            calibrator = entropy_calibrator(images, graph.input_size,
                                            cache.artifact_path(stem, '.calibration', key), batch_size=batches[1])
        build_engine(onnx_path, path, settings.precision, shapes, calibrator, show_progress=True)

    backend, entry = cache.get_or_build(
        stem, '.engine', key, build, load=lambda path: TensorRTBackend(path, engine_device, settings.precision))
    LOGGER.info('TensorRT engine %s (%s)', entry.path, 'reused' if entry.reused else entry.reason)
    return backend


def calibration_image_files(folder: str) -> list[Path]:
    """The INT8 calibration set; their names go into the engine's key, so a new set rebuilds it."""
    paths = image_files(folder) if folder and Path(folder).is_dir() else []
    if not paths:
        raise BackendError(f'int8 needs calibration images; none found in {folder!r}')
    return paths
