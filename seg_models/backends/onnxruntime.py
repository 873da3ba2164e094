"""ONNX Runtime backend: the fast CPU path, and CUDA where onnxruntime-gpu is installed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from seg_models.backends.base import Backend, BackendError


class OnnxRuntimeBackend(Backend):
    name = 'onnxruntime'

    def __init__(self, onnx_path: str | Path, device: str = 'cpu') -> None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
        if device.startswith('cuda'):
            if 'CUDAExecutionProvider' not in available:
                raise BackendError(f'device {device!r} asked for, but ONNX Runtime has only {available}')
            providers = ['CUDAExecutionProvider', 'CPUExecutionProvider']
        else:
            providers = ['CPUExecutionProvider']
        try:
            self.session = onnxruntime.InferenceSession(str(onnx_path), providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise BackendError(f'ONNX Runtime cannot load {onnx_path}: {error}') from None
        self.input_name = self.session.get_inputs()[0].name
        super().__init__(tuple(output.name for output in self.session.get_outputs()), device, 'fp32')

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: images})
        return dict(zip(self.output_names, outputs))
