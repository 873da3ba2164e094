"""What a segmenter hands to deployment: its graph, how to export it, what its artifacts depend on.

Semantic and instance models (and bring-your-own ONNX files) are described the same way, so one
path (seg_models.deploy.artifacts, seg_models.backends.factory) exports, converts, builds and
caches them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from torch import nn


@dataclass
class DeploymentGraph:
    """A model ready to deploy: the graph, how to export it, and what its artifacts depend on."""

    name: str  # artifact stem, e.g. "deeplabv3plus_resnet50_os16_cityscapes"
    output_names: tuple[str, ...]
    key: dict  # label set, normalisation, graph options: recorded in every artifact's sidecar
    module: Optional[nn.Module] = None  # None for a user-supplied ONNX file
    export: Optional[Callable[[Path], object]] = None  # picklable: it runs in a child process (export_process)
    onnx_file: Optional[Path] = None  # a user-supplied ONNX file, used as it is
    input_size: Optional[tuple[int, int]] = None  # fixed (H, W), None: dynamic
    fixed_batch: Optional[int] = None  # batch size baked into the graph, None: dynamic
    cpu_memory_arena: bool = True  # ONNX Runtime's arena pays where shapes are static (backends/onnxruntime.py)
    keep_fp32: tuple[str, ...] = ()  # node-name patterns kept fp32 in fp16/int8 graphs (seg_models.deploy.precision)
