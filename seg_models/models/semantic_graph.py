"""The deployment graph shared by every backend: raw camera pixels in, class ids out.

Normalisation and argmax live inside the graph, so PyTorch, ONNX Runtime and TensorRT all run
exactly the same computation, and only uint8 ids (not float logits) leave the accelerator.
``camera_forward`` is the same computation for camera frames already on a GPU
(seg_models.backends.device_pipeline): resized there, and the logits upsampled bilinearly to the camera's
size before the argmax, which gives better edges than upsampling ids.

On the CPU (``logits_on_host``) the graph ends at the head's quarter-resolution logits instead:
nothing leaves an accelerator there, and the host upsamples them bilinearly straight to the
camera's size before the argmax (``CameraTransform.argmax_at_image_size``), the GPU path's answer,
for 1.4% more time a frame at 512x1024 (docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from seg_models.segmenters.transform import Size, frames_at_input_size

# ImageNet statistics on the 0-255 scale: what torchvision backbones are trained with.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def no_mark(stage: str) -> None:
    """The default stage marker: nothing is timed."""


class SemanticInference(nn.Module):
    """uint8 RGB batch (N, 3, H, W) -> class ids (N, H, W) [, confidence (N, H, W) float32 in 0..1].

    ``class_id_dtype`` is torch.uint8 for label sets up to 255 classes, else torch.int32 (narrowed
    to uint16 on the host; ONNX has no uint16 ArgMax output).
    """

    def __init__(self, network: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 class_id_dtype: torch.dtype = torch.uint8, with_confidence: bool = False,
                 logits_on_host: bool = False) -> None:
        super().__init__()
        if logits_on_host and with_confidence:
            raise ValueError('a graph with a confidence output computes its class ids itself')
        self.network = network
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.class_id_dtype = class_id_dtype
        self.with_confidence = with_confidence
        self.logits_on_host = logits_on_host

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.logits_on_host:
            return ('logits',)
        return ('class_ids', 'confidence') if self.with_confidence else ('class_ids',)

    def forward(self, images: torch.Tensor):
        images = self.network_input(images.float())
        if self.logits_on_host:  # (N, C, H/4, W/4) float32
            return (self.network.head_logits(images).float(),)
        return self.answer(self.network(images))

    def camera_forward(self, frames: torch.Tensor, input_size: Size, mark: Callable[[str], None] = no_mark):
        """uint8 camera frames (N, H, W, 3) on the device -> the outputs at camera size (N, H, W);
        ``mark`` is called after each stage (preprocess, model, postprocess) for timing."""
        if self.logits_on_host:
            raise ValueError('a graph ending at quarter-resolution logits is for the host path, not a device')
        images = self.network_input(frames_at_input_size(frames, input_size))
        mark('preprocess')
        logits = self.network(images, output_size=tuple(frames.shape[1:3]))
        mark('model')
        outputs = self.answer(logits)
        mark('postprocess')
        return outputs

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """float images on 0..255 -> normalised, in the network's dtype and memory format."""
        weight = next(self.network.parameters())
        normalised = ((images - self.mean) / self.std).to(weight.dtype)
        if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            return normalised.contiguous(memory_format=torch.channels_last)
        return normalised

    def answer(self, logits: torch.Tensor):
        """Logits -> class ids [, confidence as float32]."""
        class_ids = logits.argmax(dim=1).to(self.class_id_dtype)
        if not self.with_confidence:
            return (class_ids,)
        confidence = torch.softmax(logits.float(), dim=1).amax(dim=1)
        return class_ids, confidence
