"""The interface every inference backend implements.

Backends take whole batches (N images of one size) because one process serves several cameras
with one engine; callers never see tensors, devices or sessions.
"""
from __future__ import annotations

import abc
import ctypes
import gc
import math
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np


class BackendError(RuntimeError):
    """A backend that cannot be created or cannot run a batch."""


class Backend(abc.ABC):
    """Runs a deployment graph: uint8 RGB batch (N, 3, H, W) -> named output arrays (N, ...)."""

    #: short engine name, e.g. "pytorch", "onnxruntime", "tensorrt"
    name: str = ''
    #: a backend that runs camera frames on its device, pre- and post-processing there too
    #: (seg_models.backends.device_pipeline), offers it here; the others are fed by the host transform
    device_pipeline = None

    def __init__(self, output_names: tuple[str, ...], device: str, precision: str) -> None:
        self.output_names = output_names
        self.device = device
        self.precision = precision

    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; ``images`` is C-contiguous uint8 (N, 3, H, W)."""

    def infer_tensors(self, images):
        """``infer`` for a torch tensor, giving torch tensors: on the backend's CUDA device where it
        runs on one and can keep its outputs there (post-processing then runs on the device), else
        on the CPU. This default goes through ``infer``'s host arrays."""
        import torch

        outputs = self.infer(np.ascontiguousarray(images.cpu().numpy()))
        return {name: torch.from_numpy(value) for name, value in outputs.items()}

    def describe(self) -> str:
        """One line for logs and diagnostics."""
        return f'{self.name} on {self.device} ({self.precision})'


class CallTime:
    """Milliseconds spent in the backend calls of one ``segment``: a node reports them apart from
    the pre- and post-processing around them (FrameTiming.backend_ms), so the network's share of a
    frame is measured in the process that runs it."""

    def __init__(self) -> None:
        self.ms = 0.0

    def reset(self) -> None:
        self.ms = 0.0

    def not_separable(self) -> None:
        """The network ran in one stream with its pre- and post-processing (a device pipeline)."""
        self.ms = math.nan

    @contextmanager
    def timing(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.ms += (time.perf_counter() - started) * 1e3


def release_device_memory() -> None:
    """Give accelerator memory back after the last reference to a backend was dropped (a lifecycle
    node's deactivate): collect the engine, session or module, then empty torch's CUDA cache."""
    release_host_memory()
    torch = sys.modules.get('torch')
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def release_host_memory() -> None:
    """Collect unreachable objects and hand the freed heap back to the system. glibc's malloc keeps
    freed memory for reuse: the PyTorch module an ONNX Runtime or TensorRT backend was exported
    from (or only hashed, for the cache key) would otherwise stay resident as if still loaded,
    about 200 MB for Mask R-CNN R50-FPN. Elsewhere than glibc there is nothing to trim."""
    gc.collect()
    try:
        malloc_trim = ctypes.CDLL('libc.so.6').malloc_trim
    except (OSError, AttributeError):
        return
    malloc_trim(0)
