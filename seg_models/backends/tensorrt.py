"""TensorRT backend: engines built from our ONNX files on the GPU that runs them.

Building is separate from running (``build_engine`` vs ``TensorRTBackend``) so engines can be
built ahead of time (``seg-models build``) and nodes only deserialize. Device memory comes from
torch's CUDA allocator, so no pycuda/cuda-python dependency is needed. Written against the
TensorRT 10 and 11 Python APIs (JetPack 6, DRIVE OS, current x86 releases): networks are strongly
typed, their precision set by the ONNX graph they are parsed from (seg_models.deploy.precision).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from seg_models.backends.base import Backend, BackendError

LOGGER = logging.getLogger(__name__)
WORKSPACE_BYTES = 4 << 30


def tensorrt_unavailable_reason() -> Optional[str]:
    """Why TensorRT cannot run here, or None when it can (TensorRT 10 or newer importable and a CUDA
    GPU seen)."""
    try:
        import tensorrt
    except ImportError:
        return 'the tensorrt Python module is not installed'
    problem = tensorrt_version_problem(getattr(tensorrt, '__version__', ''))
    if problem:
        return problem
    if not torch.cuda.is_available():
        return 'no CUDA GPU is visible'
    return None


def gpu_identity(device_index: int = 0) -> dict[str, str]:
    """GPU name and compute capability: an engine only runs on the GPU model it was built for."""
    properties = torch.cuda.get_device_properties(device_index)
    return {'gpu': properties.name, 'compute_capability': f'{properties.major}.{properties.minor}'}


@dataclass(frozen=True)
class InputShapes:
    """Optimization profile of the single image input: (N, 3, H, W) at min / opt / max."""

    minimum: tuple[int, int, int, int]
    optimum: tuple[int, int, int, int]
    maximum: tuple[int, int, int, int]

    def as_key(self) -> dict[str, list[int]]:
        return {'min': list(self.minimum), 'opt': list(self.optimum), 'max': list(self.maximum)}


def _trt():
    import tensorrt

    return tensorrt


def _logger():
    trt = _trt()
    return trt.Logger(trt.Logger.WARNING)


def tqdm_progress_monitor():
    """A TensorRT IProgressMonitor that shows the builder's phases as tqdm bars (``seg-models build``)."""
    trt = _trt()
    from tqdm import tqdm

    class TqdmProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, leave=parent_phase is None)

        def step_complete(self, phase_name, step):
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # never cancel

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return TqdmProgressMonitor()


MINIMUM_TENSORRT_MAJOR = 10


def strongly_typed_network_flags(trt) -> int:
    """``create_network`` flags for a strongly typed network: each tensor's type comes from the ONNX
    graph (fp16 casts, Q/DQ nodes), never from builder flags.

    TensorRT 10: strong typing is asked for with ``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)``
    (Python API reference 10.x, Core/Builder, NetworkDefinitionCreationFlag). TensorRT 11 is always
    strongly typed; the flag is kept there only for compatibility and ignored (11.0 reference, same
    page), and ``BuilderFlag.FP16/INT8`` and calibrators are gone (Migrating from TensorRT 10.x to 11.x).
    """
    flag = getattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED', None)
    return 0 if flag is None else 1 << int(flag)


def tensorrt_version_problem(version: str) -> Optional[str]:
    """Why this TensorRT cannot build our engines, or None (10.x and 11.x can)."""
    try:
        major = int(version.split('.')[0])
    except ValueError:
        return f'TensorRT reports an unreadable version {version!r}'
    if major < MINIMUM_TENSORRT_MAJOR:
        return (f'TensorRT {version} is too old: seg_models builds strongly typed networks, which need TensorRT '
                f'{MINIMUM_TENSORRT_MAJOR} or newer (JetPack 6, or NVIDIA\'s tensorrt package on x86)')
    return None


def build_engine(onnx_path: str | Path, engine_path: str | Path, shapes: InputShapes,
                 show_progress: bool = False) -> None:
    """Parse ``onnx_path`` into a strongly typed network and write its serialized engine to
    ``engine_path``. The precision is the graph's own (seg_models.deploy.precision: fp32 as exported, fp16
    by AutoCast, int8 as Q/DQ nodes), so no precision flag is set and TensorRT 10 and 11 build alike."""
    trt = _trt()
    problem = tensorrt_version_problem(trt.__version__)
    if problem:
        raise BackendError(problem)
    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise BackendError(f'TensorRT cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, shapes.minimum, shapes.optimum, shapes.maximum)
    config.add_optimization_profile(profile)
    monitor = tqdm_progress_monitor() if show_progress else None  # kept alive until the build ends
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f'TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)')
    Path(engine_path).write_bytes(bytes(serialized))


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


class TensorRTBackend(Backend):
    name = 'tensorrt'

    def __init__(self, engine_path: str | Path, device: str = 'cuda', precision: str = 'fp16') -> None:
        reason = tensorrt_unavailable_reason()
        if reason:
            raise BackendError(f'TensorRT backend unavailable: {reason}')
        trt = _trt()
        self.torch_device = torch.device(device if device.startswith('cuda') else 'cuda')
        torch.cuda.set_device(self.torch_device)
        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendError(f'{engine_path} is not a TensorRT engine for TensorRT {trt.__version__} on this GPU '
                               f'(corrupt, or built by another version or for another GPU)')
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(index) for index in range(self.engine.num_io_tensors)]
        inputs = [name for name in names if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendError(f'{engine_path}: expected one image input, found {inputs}')
        self.input_name = inputs[0]
        self.dtypes = {name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))) for name in names}
        self.stream = torch.cuda.Stream(self.torch_device)
        super().__init__(tuple(name for name in names if name != self.input_name), str(self.torch_device), precision)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.infer_tensors(torch.from_numpy(images))
        return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}

    def infer_tensors(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The engine's outputs as tensors on its device, finished (the stream synchronised). The
        engine's stream first waits for the caller's, which may still be writing ``images``."""
        caller = torch.cuda.current_stream(self.torch_device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            batch = images.to(self.torch_device, non_blocking=True).contiguous()
            batch.record_stream(self.stream)
            if not self.context.set_input_shape(self.input_name, tuple(batch.shape)):
                raise BackendError(f'input shape {tuple(batch.shape)} is outside the engine\'s profile')
            self.context.set_tensor_address(self.input_name, batch.data_ptr())
            outputs = {}
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=_torch_dtype(self.dtypes[name]), device=self.torch_device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError('TensorRT execution failed')
        self.stream.synchronize()
        for tensor in outputs.values():  # made on the engine's stream, used on the caller's
            tensor.record_stream(caller)
        return outputs
