"""Node parameters declared once, from tables, with descriptions, ranges and allowed values.

Each node lists its parameters as ``ParameterSpec`` rows; ``declare_parameters`` declares them with
descriptors (visible in ``ros2 param describe``) and refuses invalid values with a clear message.
The launch/config consistency test reads the same tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


class ParameterValueError(ValueError):
    """A parameter value outside its range or allowed choices."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    choices: Optional[tuple] = None
    value_range: Optional[tuple] = None  # (min, max), inclusive, for int and float parameters
    read_only: bool = True  # most parameters shape the model or topics and apply at start-up

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

    def check(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ParameterValueError(
                f'parameter {self.name!r} = {value!r} is not allowed; one of: {", ".join(map(str, self.choices))}')
        if self.value_range is not None and not self.value_range[0] <= value <= self.value_range[1]:
            raise ParameterValueError(
                f'parameter {self.name!r} = {value!r} is outside [{self.value_range[0]}, {self.value_range[1]}]')


def declare_parameters(node: Node, specs: Sequence[ParameterSpec]) -> dict[str, Any]:
    """Declare every spec on ``node`` and return the checked values by name."""
    values = {}
    for spec in specs:
        value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        spec.check(value)
        values[spec.name] = value
    return values
