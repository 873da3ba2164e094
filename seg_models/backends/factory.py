"""Creating the backend for a deployment graph: the one asked for, or with ``auto`` the one measured
fastest here.

Semantic and instance models share this path; the files a backend runs (ONNX exports, converted
graphs, TensorRT engines) come from seg_models.deploy.artifacts, reused from the engine cache.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from seg_models.backends.auto import measured_backend
from seg_models.backends.availability import resolved_device, unusable_reason
from seg_models.backends.base import Backend, BackendError
from seg_models.configs import BACKENDS, BackendSettings
from seg_models.deploy.artifacts import precision_onnx_artifact, tensorrt_engine
from seg_models.deploy.engine_cache import EngineCache
from seg_models.deploy.graph import DeploymentGraph

LOGGER = logging.getLogger(__name__)


def create_backend(graph: DeploymentGraph, settings: BackendSettings) -> Backend:
    """A ready backend for ``graph``: the one asked for, or with ``auto`` the one measured fastest
    here (seg_models.backends.auto); which one and why is logged."""
    if settings.backend not in BACKENDS:
        raise BackendError(f'unknown backend {settings.backend!r}; available: {", ".join(BACKENDS)}')
    settings = replace(settings, device=resolved_device(settings.device))
    cache = EngineCache(settings.engine_dir or None)
    if settings.backend != 'auto':
        LOGGER.info('backend %s: requested', settings.backend)
        return named_backend(settings.backend, graph, settings, cache)
    backend, reason = measured_backend(graph, settings, cache,
                                       lambda name: named_backend(name, graph, settings, cache))
    LOGGER.info('backend auto: %s, %s', backend.name, reason)
    return backend


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

        return OnnxRuntimeBackend(precision_onnx_artifact(graph, settings, cache), device=settings.device,
                                  memory_arena=graph.cpu_memory_arena, precision=settings.precision)
    from seg_models.backends.tensorrt import TensorRTBackend

    return tensorrt_engine(graph, settings, cache,
                           load=lambda path, device: TensorRTBackend(path, device, settings.precision))
