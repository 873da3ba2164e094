"""ONNX export of deployment graphs, for ONNX Runtime here and TensorRT on the vehicle GPU.

The semantic graph keeps batch, height and width dynamic and carries normalisation and argmax,
so the ONNX file is a complete "pixels in, class ids out" model. The Mask R-CNN graph has a fixed
batch and input size and a fixed number of detections, which is what TensorRT can parse. The
TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript and handles both.

Every file carries ``seg_models.*`` metadata (label set, kind, input size) so a model file alone
says how to run it (``seg-models info``).

After tracing, every graph is constant-folded by onnxslim (shape arithmetic of a fixed-size graph
becomes constants, as TensorRT needs for TopK's K and the like), made TensorRT-compatible where
torchvision's code and onnx-tensorrt's table disagree (``tensorrt_compatible``), and must pass the
ONNX checker and strict shape inference (``checked_graph``).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Mapping

import onnx
import torch
import torchvision
from torch import nn

from seg_models.configs import DEFAULT_INPUT_SIZE
from seg_models.models.instance_graph import InstanceInference
from seg_models.models.semantic_graph import SemanticInference

ONNX_OPSET = 17
INPUT_NAME = 'images'
METADATA_PREFIX = 'seg_models.'


def export_onnx(graph: nn.Module, path: str | Path, example: torch.Tensor, output_names: tuple[str, ...],
                dynamic_axes: Mapping[str, Mapping[int, str]], metadata: Mapping[str, object]) -> Path:
    """Trace ``graph`` on ``example`` into ``path``, fold its constants, make it TensorRT-compatible,
    check it, and attach ``metadata`` (JSON-encoded values)."""
    path = trace_onnx(graph, path, example, output_names, dynamic_axes)
    model = checked_graph(tensorrt_compatible(fold_constants(onnx.load(str(path)))))
    onnx.helper.set_model_props(model, {METADATA_PREFIX + key: json.dumps(value) for key, value in metadata.items()})
    onnx.save(model, str(path))
    return path


def trace_onnx(graph: nn.Module, path: str | Path, example: torch.Tensor, output_names: tuple[str, ...],
               dynamic_axes: Mapping[str, Mapping[int, str]]) -> Path:
    """The graph as the TorchScript exporter traces it, nothing done after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), traceable_batched_nms():
        torch.onnx.export(graph.eval(), (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=list(output_names),
                          dynamic_axes=dict(dynamic_axes) or None)
    return path


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` constant-folded and without dead nodes (onnxslim): what is computable from
    initializers and static shapes becomes an initializer."""
    import onnxslim

    return without_intermediate_shapes(onnxslim.slim(model))


def without_intermediate_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without recorded shapes of intermediate tensors (its inputs and outputs keep theirs).

    onnxslim and ModelOpt record symbolic shapes from their own inference, naming unknown sizes
    alike ('unk') in unrelated tensors; ONNX Runtime takes equal names for equal sizes and reuses
    a buffer planned for one tensor for another ("Shape mismatch attempting to re-use buffer", seen
    in an fp16 Mask R-CNN). Runtimes and TensorRT infer the shapes themselves.
    """
    del model.graph.value_info[:]
    return model


def checked_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` once the full ONNX checker and strict shape and type inference accept it (raises
    otherwise): what TensorRT's parser and ModelOpt's converters rely on."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    return model


def tensorrt_compatible(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx-tensorrt's operator table (seg_models.deploy.tensorrt_operators) lists NonZero for FP32 and FP16
    inputs; torchvision's detection code takes nonzero of BOOL masks. Such a mask is cast to FP32 in
    front of its NonZero: the same indices, and a graph the table accepts."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {value.name: value.type.tensor_type.elem_type for value in
             [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    nodes = []
    for node in model.graph.node:
        if node.op_type == 'NonZero' and types.get(node.input[0]) == onnx.TensorProto.BOOL:
            as_float = f'{node.input[0]}_as_float'
            nodes.append(onnx.helper.make_node('Cast', [node.input[0]], [as_float], name=f'{node.name}_input_cast',
                                               to=onnx.TensorProto.FLOAT))
            node.input[0] = as_float
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@contextlib.contextmanager
def traceable_batched_nms() -> Iterator[None]:
    """While exporting, torchvision's per-class NMS is traced instead of scripted.

    torchvision scripts ``_batched_nms_coordinate_trick`` under tracing (``@torch.jit._script_if_tracing``)
    for its empty-input branch, which puts ONNX ``If`` subgraphs into the Mask R-CNN graph; ModelOpt
    0.47's precision converter fails on those. This traced form computes the same kept indices with
    no branch: the class offset comes from the largest coordinate or 0, so an empty input flows
    through as empty tensors.
    """
    from torchvision.ops import boxes as box_ops

    def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float):
        largest = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
        offsets = idxs.to(boxes) * (largest + 1)
        return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)

    scripted = box_ops._batched_nms_coordinate_trick
    box_ops._batched_nms_coordinate_trick = batched_nms
    try:
        yield
    finally:
        box_ops._batched_nms_coordinate_trick = scripted


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
                         input_size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> Path:
    """Input uint8 ``images`` (N, 3, H, W); outputs ``class_ids`` (N, H, W) [and ``confidence``], or
    (``logits_on_host``) ``logits`` (N, C, H/4, W/4); every N/H/W dynamic."""
    images = {0: 'batch', 2: 'height', 3: 'width'}
    dynamic_axes = {INPUT_NAME: images}
    dynamic_axes.update({name: images if graph.logits_on_host else {0: 'batch', 1: 'height', 2: 'width'}
                         for name in graph.output_names})
    return export_onnx(graph, path, torch.zeros((1, 3, *input_size), dtype=torch.uint8), graph.output_names,
                       dynamic_axes, {'kind': 'semantic', 'label_set': label_set,
                                      'output_kind': 'logits' if graph.logits_on_host else 'class_ids',
                                      'input_size': None})


def export_instance_onnx(graph: InstanceInference, path: str | Path, label_set: str, network_classes: list[str],
                         input_size: tuple[int, int], batch_size: int = 1) -> Path:
    """Fixed (batch_size, 3, H, W) uint8 input; outputs padded to ``graph.max_detections``."""
    example = torch.zeros((batch_size, 3, *input_size), dtype=torch.uint8)
    return export_onnx(graph, path, example, graph.output_names, {},
                       {'kind': 'instance', 'label_set': label_set, 'network_classes': network_classes,
                        'input_size': list(input_size), 'batch_size': batch_size,
                        'max_detections': graph.max_detections})
