"""ONNX Runtime backend: the fast CPU path, and CUDA where onnxruntime-gpu is installed.

It runs the graph at any precision seg_models makes (fp32 export, fp16 AutoCast, int8 Q/DQ): the
very graphs TensorRT builds its strongly typed engines from, so they are checked on any CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from seg_models.backends.base import Backend, BackendError


class OnnxRuntimeBackend(Backend):
    name = 'onnxruntime'

    def __init__(self, onnx_path: str | Path, device: str = 'cpu', memory_arena: bool = True,
                 precision: str = 'fp32') -> None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
        if device.startswith('cuda'):
            if 'CUDAExecutionProvider' not in available:
                raise BackendError(f'device {device!r} asked for, but ONNX Runtime has only {available}')
            index = int(device.partition(':')[2] or 0)
            providers = [('CUDAExecutionProvider', {'device_id': index}), 'CPUExecutionProvider']
        else:
            providers = ['CPUExecutionProvider']
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_path), session_options(onnxruntime, memory_arena),
                                                        providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise BackendError(f'ONNX Runtime cannot load {onnx_path}: {error}') from None
        self.input_name = self.session.get_inputs()[0].name
        super().__init__(tuple(output.name for output in self.session.get_outputs()), device, precision)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: images})
        return dict(zip(self.output_names, outputs))

    def infer_tensors(self, images):
        """The outputs as torch tensors where ONNX Runtime wrote them, through its I/O binding: the
        input is read from the tensor's memory and the outputs handed over by DLPack, so on the CUDA
        provider nothing goes through the host. On the CPU the same binding runs (tested there)."""
        import torch

        device = torch.device(self.device if self.device.startswith('cuda') else 'cpu')
        images = images.to(device).contiguous()
        if device.type == 'cuda':
            torch.cuda.current_stream(device).synchronize()  # the input is written before ONNX Runtime reads it
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, device.type, device.index or 0, _numpy_dtype(images.dtype),
                           tuple(images.shape), images.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, device.type, device.index or 0)
        self.session.run_with_iobinding(binding)
        return {name: torch.from_dlpack(value) for name, value in zip(self.output_names, binding.get_outputs())}


def _numpy_dtype(dtype) -> np.dtype:
    import torch

    return torch.empty(0, dtype=dtype).numpy().dtype


def session_options(onnxruntime, memory_arena: bool):
    """The session options, each chosen by measurement (2-core CPU, 512x1024 input, 2026-11-22;
    docs/backends_and_gpu.md, "The engine cache"):

    * every graph optimisation (fusions, layout changes): ORT_ENABLE_ALL; ORT_ENABLE_EXTENDED was
      5-45% slower;
    * sequential execution: parallel mode was 1.6-1.7x slower (the graphs are chains whose
      operators already use every intra-op thread);
    * intra-op threads: 0, ONNX Runtime's one per physical core; 1 thread was 1.5-2.2x slower;
    * the CPU memory arena where the graph's shapes are static (DeepLabv3+: 349 MB resident, and
      off 21% slower); off for Mask R-CNN, whose detection-dependent shapes defeat the arena's
      reuse (resident 1040 MB with it, 390 MB without, at the same speed within noise).
    """
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = 0
    options.enable_cpu_mem_arena = memory_arena
    return options
