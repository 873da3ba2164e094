"""``backend: auto``: every usable backend is timed on the model, once per model and machine, and the
fastest one serves.

A fixed preference (TensorRT, then ONNX Runtime, then PyTorch) is wrong often enough: ONNX
Runtime and PyTorch eager are at parity for Mask R-CNN on some CPUs, and on a GPU machine without
TensorRT the CUDA path is PyTorch. So the candidates (each that is installed and can run the
graph at the asked precision and device) run a batch of the graph's input size; the timings and the
choice are an artifact of the engine cache, keyed by the graph, its input, the device, precision,
the machine (CPU model and cores, GPU) and the library versions. Later starts read the choice
instead of measuring again; a changed machine or library measures anew. The log says which
backend was chosen and the timings it was chosen by.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from seg_models.backends.availability import unusable_reason
from seg_models.backends.base import Backend, BackendError
from seg_models.configs import DEFAULT_INPUT_SIZE, BackendSettings
from seg_models.deploy.engine_cache import EngineCache

LOGGER = logging.getLogger(__name__)

TIMED_RUNS = 2  # after one warm-up run; the fastest counts (what the machine can do, least disturbed)



def usable_backends(graph, settings: BackendSettings) -> tuple[list[str], dict[str, str]]:
    """The backends that can run ``graph`` here, fastest-expected first, and why the others cannot."""
    reasons = {name: unusable_reason(name, graph, settings) for name in ('tensorrt', 'onnxruntime', 'pytorch')}
    unusable = {name: reason for name, reason in reasons.items() if reason}
    usable = [name for name in reasons if name not in unusable]
    if not usable:
        raise BackendError('no backend can run this model: ' + '; '.join(f'{k}: {v}' for k, v in unusable.items()))
    return usable, unusable


def machine_identity(device: str) -> dict:
    """What a measured choice depends on besides the model: CPU, cores, GPU, library versions."""
    import torch

    identity = {'cpu': _cpu_model(), 'cpu_count': os.cpu_count(), 'device': device, 'torch': torch.__version__}
    if device.startswith('cuda') and torch.cuda.is_available():
        identity['gpu'] = torch.cuda.get_device_name(torch.device(device).index or 0)
    for module in ('onnxruntime', 'tensorrt'):
        try:
            identity[module] = __import__(module).__version__
        except ImportError:
            identity[module] = None
    return identity


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def time_backend(backend: Backend, batch: np.ndarray) -> float:
    """The fastest of ``TIMED_RUNS`` ``infer`` calls on ``batch`` in milliseconds, after a warm-up run."""
    backend.infer(batch)
    timings = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        backend.infer(batch)
        timings.append((time.perf_counter() - started) * 1e3)
    return min(timings)


def measured_backend(graph, settings: BackendSettings, cache: EngineCache,
                     create: Callable[[str], Backend]) -> tuple[Backend, str]:
    """The fastest usable backend for ``graph`` (``create(name)`` makes one), and the reason to log."""
    usable, unusable = usable_backends(graph, settings)
    others = '; '.join(f'{name} unusable: {why}' for name, why in unusable.items())
    if len(usable) == 1:
        return create(usable[0]), f'the only usable backend ({others})'
    height, width = graph.input_size or DEFAULT_INPUT_SIZE
    batch = np.zeros((graph.fixed_batch or 1, 3, height, width), np.uint8)
    key = {'candidates': usable, 'input': list(batch.shape), 'precision': settings.precision,
           'machine': machine_identity(settings.device), **graph.key}
    created: dict[str, Backend] = {}

    def measure(path: Path) -> None:
        timings = {}
        for name in usable:
            created[name] = create(name)
            timings[name] = time_backend(created[name], batch)
            LOGGER.info('backend auto: %s takes %.1f ms per batch of %d', name, timings[name], batch.shape[0])
        path.write_text(json.dumps({'timings_ms': timings, 'chosen': min(timings, key=timings.get)}, indent=1))

    measurement, entry = cache.get_or_build(f'{graph.name}_auto', '.json', key, measure,
                                            load=lambda path: json.loads(path.read_text()))
    chosen, timings = measurement['chosen'], measurement['timings_ms']
    backend = created.get(chosen) or create(chosen)
    created.clear()  # the slower candidates go
    when = 'measured now' if not entry.reused else f'measured at an earlier start ({entry.path.name})'
    figures = ', '.join(f'{name} {ms:.1f} ms' for name, ms in sorted(timings.items(), key=lambda item: item[1]))
    return backend, f'fastest here, {when}: {figures}' + (f'; {others}' if others else '')
