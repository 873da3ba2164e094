"""Would TensorRT's ONNX parser take this graph? Checked on any machine, against its documented table.

The table below is onnx-tensorrt's ``docs/operators.md`` for **TensorRT 10.15** (release/10.15
branch of github.com/onnx/onnx-tensorrt): every operator marked supported, with its supported
types and restrictions. A node is refused when its operator is missing (the parser does not take
it), when the type of its data tensor is not listed, when a listed restriction does not hold, or
when a tensor breaks the page's general rules: UINT8 only as a network input or output, INT8 and
the other quantized types only through Q/DQ, opsets 9 to 24. ``seg-models build`` checks every
graph before TensorRT sees it, and CI checks every deployment graph at every precision.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

TABLE_SOURCE = 'onnx-tensorrt docs/operators.md, TensorRT 10.15'
OPSET_RANGE = (9, 24)

_F = 'FP32 FP16 BF16'
_FI = 'FP32 FP16 BF16 INT32 INT64'
_FIB = 'FP32 FP16 BF16 INT32 INT64 BOOL'
_ALL_CONST = 'FP32 FP16 BF16 FP8 FP4 INT4 INT32 INT64 BOOL'
# operator -> supported types of its data tensor (TensorRT names)
SUPPORTED_TYPES: dict[str, str] = {
    'Abs': _FI, 'Acos': _F, 'Acosh': _F, 'Add': _FI, 'And': 'BOOL', 'ArgMax': _FI, 'ArgMin': _FI, 'Asin': _F,
    'Asinh': _F, 'Atan': _F, 'Atanh': _F, 'Attention': 'FP32 FP16 BF16 INT8 FP8', 'AveragePool': _F,
    'BatchNormalization': _F, 'BlackmanWindow': 'FP32 FP16', 'Cast': 'FP32 FP16 BF16 INT32 INT64 UINT8 BOOL',
    'CastLike': 'FP32 FP16 BF16 INT32 INT64 UINT8 BOOL', 'Ceil': _F, 'Celu': _F, 'Clip': _F, 'Concat': _FIB,
    'Constant': _ALL_CONST, 'ConstantOfShape': _ALL_CONST, 'Conv': _F, 'ConvTranspose': _F, 'Cos': _F, 'Cosh': _F,
    'CumSum': _F, 'DeformConv': 'FP32 FP16', 'DepthToSpace': _FI, 'DequantizeLinear': 'INT8 FP8 FP4 INT4',
    'Div': _FI, 'Dropout': _F, 'Einsum': _F, 'Elu': _F, 'Equal': _FI, 'Erf': _F, 'Exp': _F, 'Expand': _FIB,
    'EyeLike': _FIB, 'Flatten': _FIB, 'Floor': _F, 'Gather': _FIB, 'GatherElements': _FIB, 'GatherND': _FIB,
    'Gelu': 'FP32 FP16 BF16 INT8 INT32 INT64', 'Gemm': _F, 'GlobalAveragePool': _F, 'GlobalLpPool': _F,
    'GlobalMaxPool': _F, 'Greater': _FI, 'GreaterOrEqual': _FI, 'GridSample': 'FP32 FP16',
    'GroupNormalization': _F, 'GRU': _F, 'HammingWindow': 'FP32 FP16', 'HannWindow': 'FP32 FP16',
    'HardSigmoid': _F, 'HardSwish': _F, 'Hardmax': _F, 'Identity': _FIB, 'If': _FIB, 'ImageScaler': _F,
    'InstanceNormalization': _F, 'IsInf': _F, 'IsNaN': _FI, 'LayerNormalization': _F, 'LeakyRelu': _F,
    'Less': _FI, 'LessOrEqual': _FI, 'Log': _F, 'LogSoftmax': _F, 'Loop': _FIB, 'LRN': _F, 'LSTM': _F,
    'LpNormalization': _F, 'LpPool': _F, 'MatMul': _F, 'Max': _FI, 'MaxPool': _F,
    'Mean': 'FP32 FP16 BF16 FP8 INT32 INT64', 'MeanVarianceNormalization': _F, 'Min': _FI, 'Mish': 'FP32 FP16',
    'Mod': _FI, 'Mul': _FI, 'Neg': _FI, 'NonMaxSuppression': 'FP32 FP16', 'NonZero': 'FP32 FP16', 'Not': 'BOOL',
    'OneHot': _FIB, 'Or': 'BOOL', 'Pad': _FI, 'ParametricSoftplus': _F, 'Pow': _FI, 'PRelu': _F,
    'QuantizeLinear': _F, 'RandomNormal': _F, 'RandomNormalLike': _F, 'RandomUniform': _F,
    'RandomUniformLike': _F, 'Range': _FI, 'Reciprocal': _F, 'ReduceL1': _FI, 'ReduceL2': _FI,
    'ReduceLogSum': _FI, 'ReduceLogSumExp': _FI, 'ReduceMax': _FI, 'ReduceMean': _FI, 'ReduceMin': _FI,
    'ReduceProd': _FI, 'ReduceSum': _FI, 'ReduceSumSquare': _FI, 'Relu': _FI, 'Reshape': _FIB, 'Resize': _F,
    'ReverseSequence': _FIB, 'RMSNormalization': _F, 'RNN': _F, 'RoiAlign': 'FP32 FP16',
    'RotaryEmbedding': _F, 'Round': _F, 'STFT': 'FP32', 'ScaledTanh': _F, 'Scan': _F, 'Scatter': _FI,
    'ScatterElements': _FI, 'ScatterND': _FI, 'Selu': _F, 'Shape': _FIB, 'Shrink': _FI, 'Sigmoid': _F,
    'Sign': _FI, 'Sin': _F, 'Sinh': _F, 'Size': _FIB, 'Slice': _FIB, 'Softmax': _F, 'Softplus': _F,
    'Softsign': _F, 'SpaceToDepth': _FI, 'Split': _FIB, 'Sqrt': _F, 'Squeeze': _FIB, 'Sub': _FI, 'Sum': _FI,
    'Tan': _F, 'Tanh': _F, 'TensorScatter': 'FP32 FP16 BF16 INT32', 'ThresholdedRelu': _F, 'Tile': _FIB,
    'TopK': _FI, 'Transpose': _FIB, 'Trilu': _FIB, 'Unsqueeze': _FIB, 'Upsample': _F, 'Where': _FIB,
    'Xor': 'BOOL',
}
# The page's restrictions, worded as there; each has a check below (RESTRICTION_CHECKS), or the
# operator is refused as "restriction not verified" (fail closed: a new operator in our graphs
# needs its restriction checked before CI passes).
RESTRICTIONS: dict[str, str] = {
    'Attention': '4D Q/K/V, no past/present key-value inputs or outputs',
    'AveragePool': '2D or 3D pooling only; dilations empty or all ones',
    'Constant': 'sparse_value, value_string and value_strings attributes unsupported',
    'CumSum': 'axis must be a build-time constant',
    'DeformConv': '1D or 2D spatial input, symmetric pads',
    'DequantizeLinear': 'x_zero_point must be zero',
    'Dropout': 'is_training must be an initializer evaluating to False',
    'EyeLike': 'input must have static dimensions',
    'GridSample': 'input must be 4D',
    'Hardmax': 'axis dimension must be a build-time constant',
    'If': 'branch outputs of the same rank and different names',
    'LayerNormalization': 'only the first output Y',
    'Loop': 'scan output length not dynamic; loop-carried shapes constant',
    'LpPool': 'dilations empty or all ones',
    'LSTM': 'input_forget 0, layout 0, same activations both directions',
    'MaxPool': '2D or 3D pooling only; Indices output unsupported; dilations empty or all ones',
    'OneHot': 'depth must be a build-time constant',
    'QuantizeLinear': 'y_zero_point must be 0',
    'ReduceL1': 'axes must be an initializer', 'ReduceL2': 'axes must be an initializer',
    'ReduceLogSum': 'axes must be an initializer', 'ReduceLogSumExp': 'axes must be an initializer',
    'ReduceMax': 'axes must be an initializer', 'ReduceMean': 'axes must be an initializer',
    'ReduceMin': 'axes must be an initializer', 'ReduceProd': 'axes must be an initializer',
    'ReduceSum': 'axes must be an initializer', 'ReduceSumSquare': 'axes must be an initializer',
    'Resize': ('coordinate_transformation_mode half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric or '
               'align_corners; mode nearest or linear; nearest_mode floor, ceil, round_prefer_floor or '
               'round_prefer_ceil; keep_aspect_ratio_policy stretch; no antialias; axes an iota vector with '
               'a scales tensor'),
    'RotaryEmbedding': 'position_ids must be INT64',
    'STFT': 'frame_step and window initializers, real input',
    'ScatterND': 'reduction none',
    'Squeeze': 'axes resolvable to a constant',
    'TensorScatter': '4D past_cache and update, axis -2',
    'TopK': 'sorted must be 1; K less than 3840',
    'Unsqueeze': 'axes resolvable to a constant',
    'GRU': 'same activations both directions', 'RNN': 'same activations both directions',
}
TOPK_LIMIT = 3840
QUANTIZED_TYPES = {'INT8', 'FP8', 'FP4', 'INT4'}
# ONNX element type names -> the page's names
_ONNX_TO_TENSORRT = {'FLOAT': 'FP32', 'FLOAT16': 'FP16', 'BFLOAT16': 'BF16', 'INT32': 'INT32', 'INT64': 'INT64',
                     'INT8': 'INT8', 'UINT8': 'UINT8', 'BOOL': 'BOOL', 'FLOAT8E4M3FN': 'FP8', 'FLOAT4E2M1': 'FP4',
                     'INT4': 'INT4', 'DOUBLE': 'FP32'}  # DOUBLE: "cast down to FLOAT" per the page


class _Graph:
    """What the checks need of a model: tensor types, constants, graph inputs and outputs."""

    def __init__(self, model) -> None:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        graph = inferred.graph
        self.types: dict[str, str] = {}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if value.type.HasField('tensor_type'):
                self.types[value.name] = self._name(value.type.tensor_type.elem_type)
        self.constants: dict[str, object] = {}
        for tensor in graph.initializer:
            self.types[tensor.name] = self._name(tensor.data_type)
            self.constants[tensor.name] = tensor
        for node in graph.node:
            if node.op_type == 'Constant':
                value = next((a.t for a in node.attribute if a.name == 'value'), None)
                if value is not None:
                    self.constants[node.output[0]] = value
                    self.types[node.output[0]] = self._name(value.data_type)
        self.inputs = {value.name for value in graph.input}
        self.outputs = {value.name for value in graph.output}
        self.nodes = list(graph.node)
        self.opset = next((entry.version for entry in inferred.opset_import if entry.domain in ('', 'ai.onnx')), 0)

    @staticmethod
    def _name(element_type: int) -> str:
        import onnx

        name = onnx.TensorProto.DataType.Name(element_type)
        return _ONNX_TO_TENSORRT.get(name, name)

    def constant(self, name: str):
        """The numpy value of ``name`` where it is an initializer or a Constant's output, else None."""
        from onnx import numpy_helper

        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def _attribute(node, name: str, default=None):
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node, index: int) -> str:
    return node.input[index] if len(node.input) > index else ''


def _constant_axes(graph: _Graph, node) -> Optional[str]:
    """Axes given as an attribute (older opsets) or as a constant second input."""
    if _attribute(node, 'axes') is not None or not _input(node, 1):
        return None
    return None if graph.constant(node.input[1]) is not None else 'axes is not a build-time constant'


def _pooling(graph: _Graph, node) -> Optional[str]:
    kernel = _attribute(node, 'kernel_shape', [])
    if len(kernel) not in (2, 3):
        return f'{len(kernel)}D pooling (2D or 3D only)'
    if any(d != 1 for d in _attribute(node, 'dilations', [])):
        return 'dilations other than 1'
    if node.op_type == 'MaxPool' and len(node.output) > 1 and node.output[1]:
        return 'the Indices output is used'
    return None


def _zero_point(graph: _Graph, node) -> Optional[str]:
    if not _input(node, 2):
        return None
    zero_point = graph.constant(node.input[2])
    if zero_point is None or zero_point.any():
        return 'zero point is not a constant zero'
    return None


def _resize(graph: _Graph, node) -> Optional[str]:
    transform = _text(_attribute(node, 'coordinate_transformation_mode', 'half_pixel'))
    if transform not in ('half_pixel', 'pytorch_half_pixel', 'tf_half_pixel_for_nn', 'asymmetric', 'align_corners'):
        return f'coordinate_transformation_mode {transform}'
    mode = _text(_attribute(node, 'mode', 'nearest'))
    if mode not in ('nearest', 'linear'):
        return f'mode {mode}'
    nearest = _text(_attribute(node, 'nearest_mode', 'round_prefer_floor'))
    if mode == 'nearest' and nearest not in ('floor', 'ceil', 'round_prefer_floor', 'round_prefer_ceil'):
        return f'nearest_mode {nearest}'
    if _text(_attribute(node, 'keep_aspect_ratio_policy', 'stretch')) != 'stretch':
        return 'keep_aspect_ratio_policy other than stretch'
    if _attribute(node, 'antialias', 0):
        return 'antialias'
    axes = _attribute(node, 'axes')
    if axes is not None and _input(node, 2) and list(axes) != list(range(len(axes))):
        return 'axes is not an iota vector'
    return None


def _topk(graph: _Graph, node) -> Optional[str]:
    if _attribute(node, 'sorted', 1) != 1:
        return 'sorted is not 1'
    k = graph.constant(_input(node, 1))
    if k is None:
        return 'K is not a build-time constant'
    if int(k.reshape(-1)[0]) >= TOPK_LIMIT:
        return f'K = {int(k.reshape(-1)[0])} (must be less than {TOPK_LIMIT})'
    return None


def _constant_input(index: int, what: str) -> Callable[[_Graph, object], Optional[str]]:
    def check(graph: _Graph, node) -> Optional[str]:
        name = _input(node, index)
        return None if not name or graph.constant(name) is not None else f'{what} is not a build-time constant'
    return check


def _dropout(graph: _Graph, node) -> Optional[str]:
    training = graph.constant(_input(node, 2)) if _input(node, 2) else None
    return 'is_training is not a constant False' if _input(node, 2) and (training is None or training.any()) else None


def _constant_node(graph: _Graph, node) -> Optional[str]:
    names = {attribute.name for attribute in node.attribute}
    unsupported = names & {'sparse_value', 'value_string', 'value_strings'}
    return f'attribute {sorted(unsupported)[0]}' if unsupported else None


def _layer_norm(graph: _Graph, node) -> Optional[str]:
    return 'outputs other than Y are used' if any(node.output[1:]) else None


def _scatter_nd(graph: _Graph, node) -> Optional[str]:
    reduction = _text(_attribute(node, 'reduction', 'none'))
    return f'reduction {reduction}' if reduction != 'none' else None


def _if(graph: _Graph, node) -> Optional[str]:
    branches = [_attribute(node, name) for name in ('then_branch', 'else_branch')]
    then_outputs, else_outputs = ([output for output in branch.output] for branch in branches)
    for then_output, else_output in zip(then_outputs, else_outputs):
        if then_output.name == else_output.name:
            return f'both branches name their output {then_output.name}'
        ranks = [len(output.type.tensor_type.shape.dim) for output in (then_output, else_output)]
        if all(output.type.tensor_type.HasField('shape') for output in (then_output, else_output)) and \
                ranks[0] != ranks[1]:
            return f'branch outputs of ranks {ranks[0]} and {ranks[1]}'
    return None


RESTRICTION_CHECKS: dict[str, Callable[[_Graph, object], Optional[str]]] = {
    'AveragePool': _pooling, 'MaxPool': _pooling, 'LpPool': _pooling,
    'Constant': _constant_node, 'CumSum': _constant_input(1, 'axis'), 'DequantizeLinear': _zero_point,
    'QuantizeLinear': _zero_point, 'Dropout': _dropout, 'If': _if, 'LayerNormalization': _layer_norm,
    'OneHot': _constant_input(1, 'depth'), 'Resize': _resize, 'ScatterND': _scatter_nd, 'TopK': _topk,
    'Squeeze': _constant_axes, 'Unsqueeze': _constant_axes,
    **{op: _constant_axes for op in RESTRICTIONS if op.startswith('Reduce')},
}


def _data_type(graph: _Graph, node) -> tuple[str, str]:
    """(tensor, type) of the node's data tensor, the one the page's types describe."""
    if node.op_type in ('Constant', 'ConstantOfShape', 'RandomNormal', 'RandomUniform'):
        name = node.output[0]
    elif node.op_type == 'Where':
        name = _input(node, 1)
    else:
        name = _input(node, 0)
    return name, graph.types.get(name, '')


def _node_problem(graph: _Graph, node) -> Optional[str]:
    if node.domain not in ('', 'ai.onnx'):
        return f'custom domain {node.domain} (needs a TensorRT plugin)'
    if node.op_type not in SUPPORTED_TYPES:
        return 'operator not supported by TensorRT\'s ONNX parser'
    name, data_type = _data_type(graph, node)
    if data_type and data_type not in SUPPORTED_TYPES[node.op_type].split() and \
            not (data_type == 'UINT8' and name in graph.inputs):
        return f'{data_type} input {name} (supported: {SUPPORTED_TYPES[node.op_type].replace(" ", ", ")})'
    if node.op_type == 'Cast':
        target = graph.types.get(node.output[0], '')
        if target not in SUPPORTED_TYPES['Cast'].split():
            return f'cast to {target}'
    if node.op_type in RESTRICTIONS:
        check = RESTRICTION_CHECKS.get(node.op_type)
        if check is None:
            return f'restriction not verified by seg_models: {RESTRICTIONS[node.op_type]}'
        problem = check(graph, node)
        if problem:
            return f'{problem} (TensorRT: {RESTRICTIONS[node.op_type]})'
    return None


def _tensor_problems(graph: _Graph) -> list[str]:
    """The page's general rules: UINT8 only at the network's edges; quantized types only into
    DequantizeLinear or out of QuantizeLinear."""
    problems = []
    quantized_ends = set()
    for node in graph.nodes:
        if node.op_type in ('QuantizeLinear', 'DequantizeLinear'):  # their zero point has the quantized type
            quantized_ends.add(_input(node, 2))
        if node.op_type == 'QuantizeLinear':
            quantized_ends.add(node.output[0])
        if node.op_type == 'DequantizeLinear':
            quantized_ends.add(node.input[0])
    for name, data_type in graph.types.items():
        if data_type == 'UINT8' and name not in graph.inputs | graph.outputs:
            problems.append(f'tensor {name}: UINT8 is supported only as a network input or output')
        if data_type in QUANTIZED_TYPES and name not in quantized_ends:
            problems.append(f'tensor {name}: {data_type} is supported only through quantization (Q/DQ)')
    return problems


def unsupported_nodes(model_or_path) -> list[str]:
    """One line per node or tensor TensorRT's ONNX parser would refuse ('NodeName (Op): reason');
    empty when the graph would parse."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    graph = _Graph(model)
    problems = []
    if not OPSET_RANGE[0] <= graph.opset <= OPSET_RANGE[1]:
        problems.append(f'opset {graph.opset} (TensorRT 10 parses opsets {OPSET_RANGE[0]} to {OPSET_RANGE[1]})')
    for node in graph.nodes:
        problem = _node_problem(graph, node)
        if problem:
            problems.append(f'{node.name or node.output[0]} ({node.op_type}): {problem}')
    return problems + _tensor_problems(graph)
