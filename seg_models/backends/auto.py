"""``backend: auto``: every usable backend is timed on the model, once per model and machine (and
again when the measurement is old or asked for), and the fastest one serves.

A fixed preference (TensorRT, then ONNX Runtime, then PyTorch) is wrong often enough: ONNX
Runtime and PyTorch eager are at parity for Mask R-CNN on some CPUs, and on a GPU machine without
TensorRT the CUDA path is PyTorch. So the candidates (each that is installed and can run the
graph at the asked precision and device) run a batch of the graph's input size; the timings and the
choice are an artifact of the engine cache, keyed by the graph, its input, the device, precision,
the machine (CPU model and cores, GPU) and the library versions. Later starts read the choice
instead of measuring again; a changed machine or library measures anew, and so does a measurement
older than ``MAX_AGE_DAYS`` or ``seg-models build --remeasure``. The candidates run interleaved
(A, B, A, B ...) and each is judged by its median, so a busy moment of the machine slows every
candidate alike instead of deciding for one. The log says which backend was chosen, the timings
it was chosen by, and when they were measured.
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
from seg_models.deploy.progress import announced

LOGGER = logging.getLogger(__name__)

TIMED_ROUNDS = 3  # after one warm-up run each; every round runs each candidate once, the median counts
MAX_AGE_DAYS = 30  # older measurements are taken again (libraries and load of the machine change)



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


def interleaved_timings(backends: dict[str, Backend], batch: np.ndarray, rounds: int = TIMED_ROUNDS
                        ) -> dict[str, float]:
    """Median milliseconds of ``rounds`` ``infer`` calls of each backend on ``batch``, after one warm-up
    call each; the calls alternate between the backends, so a busy moment slows them alike."""
    for backend in backends.values():
        backend.infer(batch)
    timings: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(rounds):
        for name, backend in backends.items():
            started = time.perf_counter()
            backend.infer(batch)
            timings[name].append((time.perf_counter() - started) * 1e3)
    return {name: float(np.median(values)) for name, values in timings.items()}


def _recent_measurement(path: Path) -> dict:
    """A recorded measurement, refused (so measured again) when older than ``MAX_AGE_DAYS``."""
    measurement = json.loads(path.read_text())
    age_days = (time.time() - measurement.get('measured_at', 0)) / 86400
    if age_days > MAX_AGE_DAYS:
        raise ValueError(f'measured {age_days:.0f} days ago, more than {MAX_AGE_DAYS}')
    return measurement


def measured_backend(graph, settings: BackendSettings, cache: EngineCache,
                     create: Callable[[str], Backend]) -> tuple[Backend, str]:
    """The fastest usable backend for ``graph`` (``create(name)`` makes one), and the reason to log."""
    usable, unusable = usable_backends(graph, settings)
    others = '; '.join(f'{name} unusable: {why}' for name, why in unusable.items())
    if len(usable) == 1:
        return create(usable[0]), f'the only usable backend ({others})'
    height, width = graph.input_size or DEFAULT_INPUT_SIZE
    # our graphs take uint8 camera pixels; a user's ONNX file takes the float input its adapter normalises
    batch = np.zeros((graph.fixed_batch or 1, 3, height, width), np.float32 if graph.onnx_file else np.uint8)
    key = {'candidates': usable, 'input': list(batch.shape), 'precision': settings.precision,
           'machine': machine_identity(settings.device), **graph.key}
    created: dict[str, Backend] = {}

    def measure(path: Path) -> None:
        for name in usable:
            created[name] = create(name)
        with announced(f'backend auto: timing {", ".join(usable)} on this model ({TIMED_ROUNDS} interleaved rounds)',
                       'once per model and machine; seconds for DeepLabv3+, about a minute for Mask R-CNN on 2 cores'):
            timings = interleaved_timings(created, batch)
        for name, milliseconds in timings.items():
            LOGGER.info('backend auto: %s takes %.1f ms per batch of %d (median)', name, milliseconds, batch.shape[0])
        path.write_text(json.dumps({'timings_ms': timings, 'chosen': min(timings, key=timings.get),
                                    'measured_at': time.time(), 'load_average': os.getloadavg()[0]}, indent=1))

    stem = f'{graph.name}_auto'
    if settings.remeasure:
        cache.forget(stem, '.json', key)
    measurement, entry = cache.get_or_build(stem, '.json', key, measure, load=_recent_measurement)
    chosen, timings = measurement['chosen'], measurement['timings_ms']
    backend = created.get(chosen) or create(chosen)
    created.clear()  # the slower candidates go
    measured_at = time.strftime('%Y-%m-%d %H:%M', time.localtime(measurement.get('measured_at', 0)))
    when = 'measured now' if not entry.reused else (
        f'reusing the choice measured on {measured_at} ({entry.path.name}; `seg-models build --remeasure` '
        f'measures again)')
    figures = ', '.join(f'{name} {ms:.1f} ms' for name, ms in sorted(timings.items(), key=lambda item: item[1]))
    return backend, f'fastest here, {when}: {figures}' + (f'; {others}' if others else '')
