"""The deployment graph shared by every backend: raw camera pixels in, class ids out.

Normalisation and argmax live inside the graph, so PyTorch, ONNX Runtime and TensorRT all run
exactly the same computation, and only uint8 ids (not float logits) leave the accelerator.
"""
from __future__ import annotations

import torch
from torch import nn

# ImageNet statistics on the 0-255 scale: what torchvision backbones are trained with.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class SemanticInference(nn.Module):
    """uint8 RGB batch (N, 3, H, W) -> class ids (N, H, W) [, confidence (N, H, W) float32 in 0..1].

    ``class_id_dtype`` is torch.uint8 for label sets up to 255 classes, else torch.int32 (narrowed
    to uint16 on the host; ONNX has no uint16 ArgMax output).
    """

    def __init__(self, network: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 class_id_dtype: torch.dtype = torch.uint8, with_confidence: bool = False) -> None:
        super().__init__()
        self.network = network
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.class_id_dtype = class_id_dtype
        self.with_confidence = with_confidence

    @property
    def output_names(self) -> tuple[str, ...]:
        return ('class_ids', 'confidence') if self.with_confidence else ('class_ids',)

    def forward(self, images: torch.Tensor):
        logits = self.network((images.float() - self.mean) / self.std)
        class_ids = logits.argmax(dim=1).to(self.class_id_dtype)
        if not self.with_confidence:
            return (class_ids,)
        confidence = torch.softmax(logits, dim=1).amax(dim=1)
        return class_ids, confidence
