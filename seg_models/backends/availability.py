"""Which device a setting means and whether a backend can run a graph here, asked before creating one.

Both an explicit backend choice (refused with the reason) and ``backend: auto`` (which skips what
cannot run) ask here, so the two never disagree.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch

from seg_models.configs import BackendSettings
from seg_models.deploy.artifacts import precision_unavailable_reason
from seg_models.deploy.graph import DeploymentGraph


def resolved_device(device: str) -> str:
    """``auto``: the first CUDA GPU where PyTorch sees one, else the CPU; other names as they are."""
    if device != 'auto':
        return device
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def unusable_reason(name: str, graph: DeploymentGraph, settings: BackendSettings) -> Optional[str]:
    """Why backend ``name`` cannot run ``graph`` with ``settings`` here, or None where it can: asked
    before creating one, so an explicit choice is refused with the reason and ``auto`` skips it."""
    if name == 'pytorch':
        if graph.module is None:
            return 'a user-supplied ONNX model has no PyTorch module'
        if settings.precision == 'int8':
            return 'it runs fp32 or fp16 (int8 is a Q/DQ graph for ONNX Runtime and TensorRT)'
        if settings.precision == 'fp16' and not settings.device.startswith('cuda'):
            return 'its fp16 needs a CUDA device'
        return None
    if name == 'onnxruntime':
        if importlib.util.find_spec('onnxruntime') is None:
            return 'onnxruntime is not installed'
        if settings.device.startswith('cuda'):
            import onnxruntime

            if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
                return f'it has no CUDA execution provider for {settings.device} (onnxruntime-gpu is not installed)'
        return precision_unavailable_reason(graph, settings)
    from seg_models.backends.tensorrt import tensorrt_unavailable_reason

    missing = tensorrt_unavailable_reason() or precision_unavailable_reason(graph, settings)
    if missing is None and graph.input_size is None:
        missing = ('the model has no fixed input size (TensorRT engines are built for one: set input_height and '
                   'input_width)')
    return missing
