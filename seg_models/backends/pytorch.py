"""PyTorch eager backend: the reference every other backend is checked against."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seg_models.backends.base import Backend, BackendError


class PyTorchBackend(Backend):
    name = 'pytorch'

    def __init__(self, module: nn.Module, output_names: tuple[str, ...], device: str = 'cpu',
                 precision: str = 'fp32') -> None:
        if precision not in ('fp32', 'fp16'):
            raise BackendError(f'PyTorch backend runs fp32 or fp16, not {precision!r}')
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise BackendError(f'device {device!r} asked for, but PyTorch sees no CUDA GPU')
        if precision == 'fp16' and not device.startswith('cuda'):
            raise BackendError('fp16 needs a CUDA device in the PyTorch backend')
        super().__init__(output_names, device, precision)
        self.module = module.eval().to(device)

    @torch.inference_mode()
    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.from_numpy(images).to(self.device)
        with torch.autocast(device_type='cuda', dtype=torch.float16, enabled=self.precision == 'fp16'):
            outputs = self.module(batch)
        return {name: output.float().cpu().numpy() if output.is_floating_point() else output.cpu().numpy()
                for name, output in zip(self.output_names, outputs)}
