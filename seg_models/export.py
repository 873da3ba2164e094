"""ONNX export of deployment graphs, for ONNX Runtime here and TensorRT on the vehicle GPU.

The semantic graph keeps batch, height and width dynamic and carries normalisation and argmax,
so the ONNX file is a complete "pixels in, class ids out" model. The TorchScript exporter
(``dynamo=False``) is used: it needs no onnxscript and handles both graph families.
"""
from __future__ import annotations

from pathlib import Path

import onnx
import torch

from seg_models.models.semantic_inference import SemanticInference

ONNX_OPSET = 17
INPUT_NAME = 'images'


def export_semantic_onnx(graph: SemanticInference, path: str | Path, label_set: str,
                         example_size: tuple[int, int] = (512, 1024)) -> Path:
    """Write ``graph`` to ``path``: input uint8 ``images`` (N, 3, H, W), outputs ``class_ids``
    (N, H, W) [and ``confidence``], every N/H/W dynamic; the label set is kept in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, 3, *example_size), dtype=torch.uint8)
    spatial = {0: 'batch', 1: 'height', 2: 'width'}
    dynamic_axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'}}
    dynamic_axes.update({name: spatial for name in graph.output_names})
    with torch.no_grad():
        torch.onnx.export(graph.eval(), (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=list(graph.output_names),
                          dynamic_axes=dynamic_axes)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {'seg_models.label_set': label_set, 'seg_models.output_kind': 'class_ids'})
    onnx.save(model, str(path))
    return path
