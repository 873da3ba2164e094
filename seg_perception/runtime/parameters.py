"""Node parameters declared once, from tables, with descriptions, ranges and allowed values.

Each node lists its parameters as ``ParameterSpec`` rows; ``declare_parameters`` declares them with
descriptors (visible in ``ros2 param describe``) and refuses invalid values with a clear message.
Defaults that a seg_models config also has are read from it (``ParameterSpec.of_field``), and the
values go back into typed configs with ``seg_models.configs.build_config``, by name. The
launch/config consistency tests read the same tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from seg_models.configs import BACKENDS, DEFAULT_INPUT_SIZE, PRECISIONS, BackendSettings, field_default


class ParameterValueError(ValueError):
    """A parameter value of the wrong type, outside its range or allowed choices: a usage error
    (the executables exit with code 2 and this one line)."""


# What each parameter type takes, in words, for refusals.
_TYPE_WORDS = ((bool, 'true or false'), (int, 'an integer'), (float, 'a number with a decimal point (e.g. 2.0)'),
               (str, 'a string'), (tuple, 'a list of strings, e.g. "[a, b]"'))


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter; a tuple default declares a string array (empty by default)."""

    name: str
    default: Any
    description: str
    choices: Optional[tuple] = None
    value_range: Optional[tuple] = None  # (min, max), inclusive, for int and float parameters
    read_only: bool = True  # most parameters shape the model or topics and apply at start-up

    @classmethod
    def of_field(cls, config_type: type, name: str, description: str, **options: Any) -> 'ParameterSpec':
        """The parameter for field ``name`` of a config dataclass, with that field's default."""
        return cls(name, field_default(config_type, name), description, **options)

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = 'one of: ' + ', '.join(map(str, self.choices))
        if self.value_range is not None:
            low, high = self.value_range
            if isinstance(self.default, int) and not isinstance(self.default, bool):
                descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        return descriptor

    @property
    def is_string_array(self) -> bool:
        return isinstance(self.default, tuple)

    @property
    def allowed(self) -> str:
        """What the parameter takes, in words: its type, and its choices or range."""
        words = next(words for kind, words in _TYPE_WORDS if isinstance(self.default, kind))
        if self.choices:
            return f'one of: {", ".join(map(str, self.choices))}'
        if self.value_range is not None:
            return f'{words} in [{self.value_range[0]}, {self.value_range[1]}]'
        return words

    def refusal(self, value: Any) -> ParameterValueError:
        """The one-line error for ``value``: the parameter, the value and what is allowed."""
        return ParameterValueError(f'parameter {self.name!r} = {value!r} is not allowed; it takes {self.allowed}')

    def check(self, value: Any) -> None:
        if self.is_string_array:
            return
        if self.choices and value not in self.choices:
            raise self.refusal(value)
        if self.value_range is not None and not self.value_range[0] <= value <= self.value_range[1]:
            raise self.refusal(value)


def declare_parameters(node: Node, specs: Sequence[ParameterSpec]) -> dict[str, Any]:
    """Declare every spec on ``node`` and return the checked values by name; a value given on the
    command line or in a params file that the spec refuses raises ParameterValueError."""
    values = {}
    for spec in specs:
        # An empty list has no type of its own in ROS parameters: declared by type then.
        default = (list(spec.default) or Parameter.Type.STRING_ARRAY) if spec.is_string_array else spec.default
        try:
            value = node.declare_parameter(spec.name, default, spec.descriptor()).value
        except ParameterException:
            # rclpy refused the given value (type or descriptor range) before our check could word it.
            value = _as_double_if_integer(node, spec, _given_value(node, spec.name))
        if spec.is_string_array:
            value = tuple(value) if value is not None else spec.default
        spec.check(value)
        values[spec.name] = value
    return values


def _as_double_if_integer(node: Node, spec: ParameterSpec, given: Any) -> float:
    """People write ``-p period:=2`` for a double parameter: the integer is taken as that double
    (declared again as a double, with the spec's descriptor); any other refused value raises."""
    if not (isinstance(spec.default, float) and isinstance(given, int) and not isinstance(given, bool)):
        raise spec.refusal(given)
    node.undeclare_parameter(spec.name)
    try:
        return node.declare_parameter(spec.name, float(given), spec.descriptor(), ignore_override=True).value
    except ParameterException:  # outside the descriptor's range
        raise spec.refusal(float(given)) from None


def _given_value(node: Node, name: str) -> Any:
    """The value given for ``name`` (command line or params file), whatever its type: declared
    dynamically typed, which takes any value, after the typed declaration refused it."""
    return node.declare_parameter(name, None, ParameterDescriptor(dynamic_typing=True)).value


# Parameters every segmentation node shares (backend and network input), declared from this table
# by the semantic and the instance node alike.
BACKEND_PARAMETERS = (
    ParameterSpec.of_field(BackendSettings, 'backend', 'Inference backend; auto picks the fastest available and '
                                                       'logs why.', choices=BACKENDS),
    ParameterSpec.of_field(BackendSettings, 'engine_dir', 'Engine cache for exported ONNX models and TensorRT '
                                                          'engines (pre-build them with `seg-models build`); empty: '
                                                          '$SEG_MODELS_CACHE_DIR or ~/.cache/seg_models.'),
    ParameterSpec.of_field(BackendSettings, 'calibration_images', 'Folder of camera frames: int8 calibration '
                                                                  '(Q/DQ graph) and fp16 range checks.'),
    ParameterSpec.of_field(BackendSettings, 'device', 'Device for PyTorch and ONNX Runtime: auto (cuda where '
                           'PyTorch sees a GPU, else cpu), cpu, cuda or cuda:N.'),
    ParameterSpec.of_field(BackendSettings, 'precision', 'Precision of the ONNX graph the backend runs (fp16: '
                                                         'AutoCast, int8: Q/DQ; ONNX Runtime and TensorRT).',
                           choices=PRECISIONS),
    ParameterSpec('input_height', DEFAULT_INPUT_SIZE[0], 'Network input height in pixels; 0 = each camera image '
                  'as it is (semantic; a full-resolution network) or the native 1024 (instance).',
                  value_range=(0, 8192)),
    ParameterSpec('input_width', DEFAULT_INPUT_SIZE[1], 'Network input width in pixels; 0 = each camera image '
                  'as it is (semantic; a full-resolution network) or the native 2048 (instance).',
                  value_range=(0, 8192)),
)


def max_batch_parameter(config_type: type, description: str) -> ParameterSpec:
    """``max_batch`` with the task's default (its config's ``deployment.max_batch``)."""
    return ParameterSpec('max_batch', field_default(config_type, 'deployment').max_batch, description,
                         value_range=(1, 64))


def input_size_from_parameters(values: dict[str, Any]) -> Optional[tuple[int, int]]:
    """(height, width) from input_height/input_width; None (camera resolution) when both are 0."""
    if values['input_height'] and values['input_width']:
        return values['input_height'], values['input_width']
    if values['input_height'] or values['input_width']:
        raise ParameterValueError('set both input_height and input_width, or neither (0 = camera resolution)')
    return None
