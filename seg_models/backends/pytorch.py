"""PyTorch backend: the reference every other backend is checked against, and the CUDA path
where TensorRT is absent.

On a CUDA device it runs camera frames through a ``DevicePipeline`` (resize, normalisation,
upsampling and the mask paste on the GPU, only small results back); the segmenters use it
whenever a backend offers one. ``infer`` (a batch already at the network size) serves the host
path, the CPU and ``backend: auto``'s timing.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch
from torch import nn

from seg_models.backends.base import Backend, BackendError
from seg_models.backends.device_pipeline import DeviceOptions, DevicePipeline, strict_fp32_convolutions


class PyTorchBackend(Backend):
    name = 'pytorch'

    def __init__(self, module: nn.Module, output_names: tuple[str, ...], device: str = 'cpu',
                 precision: str = 'fp32', device_side: Optional[bool] = None,
                 options: DeviceOptions = DeviceOptions()) -> None:
        """``device_side`` (default: on CUDA devices) runs camera frames through a DevicePipeline."""
        if precision not in ('fp32', 'fp16'):
            raise BackendError(f'PyTorch backend runs fp32 or fp16, not {precision!r}')
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise BackendError(f'device {device!r} asked for, but PyTorch sees no CUDA GPU')
        if precision == 'fp16' and not device.startswith('cuda'):
            raise BackendError('fp16 needs a CUDA device in the PyTorch backend')
        super().__init__(output_names, device, precision)
        if device.startswith('cuda') if device_side is None else device_side:
            self.device_pipeline = DevicePipeline(module, device, precision, options)
            self.module = self.device_pipeline.module
        else:
            self.module = module.eval().to(device)

    @torch.inference_mode()
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.from_numpy(images).to(self.device)
        autocast = torch.autocast('cuda', dtype=torch.float16) if self.precision == 'fp16' else contextlib.nullcontext()
        with autocast, strict_fp32_convolutions(self.precision == 'fp32'):  # as the device path: fp32 means fp32
            outputs = self.module(batch)
        return {name: output.float().cpu().numpy() if output.is_floating_point() else output.cpu().numpy()
                for name, output in zip(self.output_names, outputs)}

    def describe(self) -> str:
        where = ', pre/post-processing on the device' if self.device_pipeline and self.device_pipeline.cuda else ''
        return f'{self.name} on {self.device} ({self.precision}{where})'
