"""ONNX export of deployment graphs, for ONNX Runtime here and TensorRT on the vehicle GPU.

The semantic graph keeps batch, height and width dynamic and carries normalisation and argmax,
so the ONNX file is a complete "pixels in, class ids out" model. The Mask R-CNN graph has a fixed
batch and input size and a fixed number of detections, which is what TensorRT can parse. The
TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript and handles both.

Every file carries ``seg_models.*`` metadata (label set, kind, input size) so a model file alone
says how to run it (``seg-models info``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import onnx
import torch
from torch import nn

from seg_models.models.instance_inference import InstanceInference
from seg_models.models.semantic_inference import SemanticInference

ONNX_OPSET = 17
INPUT_NAME = 'images'
METADATA_PREFIX = 'seg_models.'


def export_onnx(graph: nn.Module, path: str | Path, example: torch.Tensor, output_names: tuple[str, ...],
                dynamic_axes: Mapping[str, Mapping[int, str]], metadata: Mapping[str, object]) -> Path:
    """Trace ``graph`` on ``example`` into ``path`` and attach ``metadata`` (JSON-encoded values)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(graph.eval(), (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=list(output_names),
                          dynamic_axes=dict(dynamic_axes) or None)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {METADATA_PREFIX + key: json.dumps(value) for key, value in metadata.items()})
    onnx.save(model, str(path))
    return path


def read_onnx_metadata(path: str | Path) -> dict[str, object]:
    """The ``seg_models.*`` metadata of an exported file (empty for foreign ONNX files)."""
    model = onnx.load(str(path), load_external_data=False)
    metadata = {}
    for prop in model.metadata_props:
        if prop.key.startswith(METADATA_PREFIX):
            try:
                metadata[prop.key[len(METADATA_PREFIX):]] = json.loads(prop.value)
            except json.JSONDecodeError:
                metadata[prop.key[len(METADATA_PREFIX):]] = prop.value
    return metadata


def export_semantic_onnx(graph: SemanticInference, path: str | Path, label_set: str,
                         example_size: tuple[int, int] = (512, 1024)) -> Path:
    """Input uint8 ``images`` (N, 3, H, W); outputs ``class_ids`` (N, H, W) [and ``confidence``];
    every N/H/W dynamic."""
    spatial = {0: 'batch', 1: 'height', 2: 'width'}
    dynamic_axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
    dynamic_axes.update({name: spatial for name in graph.output_names})
    return export_onnx(graph, path, torch.zeros((1, 3, *example_size), dtype=torch.uint8), graph.output_names,
                       dynamic_axes, {'kind': 'semantic', 'label_set': label_set, 'output_kind': 'class_ids',
                                      'input_size': None})


def export_instance_onnx(graph: InstanceInference, path: str | Path, label_set: str, network_classes: list[str],
                         input_size: tuple[int, int], batch_size: int = 1) -> Path:
    """Fixed (batch_size, 3, H, W) uint8 input; outputs padded to ``graph.max_detections``."""
    example = torch.zeros((batch_size, 3, *input_size), dtype=torch.uint8)
    return export_onnx(graph, path, example, graph.output_names, {},
                       {'kind': 'instance', 'label_set': label_set, 'network_classes': network_classes,
                        'input_size': list(input_size), 'batch_size': batch_size,
                        'max_detections': graph.max_detections})
