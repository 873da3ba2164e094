"""A parameter table in words: the rows every rendering shares, and the plain text of ``--help``.

The markdown reference (parameter_docs) and each executable's ``--help`` (node_main) render the
same ``ParameterSpec`` tables through these rows; this module knows no node, so both can use it.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

from seg_perception.runtime.parameters import ParameterSpec


@dataclass(frozen=True)
class ParameterRow:
    """One parameter in words: every cell plain text (no markdown), for any rendering."""

    name: str
    type: str  # as ``ros2 param describe`` names it
    default: str
    choices: tuple[str, ...]  # empty when any value (in the range) goes
    value_range: str  # '[low, high]', inclusive; empty when unbounded
    description: str
    read_only: bool

    @property
    def allowed(self) -> str:
        """The choices or the range; empty when any value of the type goes."""
        return ', '.join(self.choices) or self.value_range


def value_text(value: Any) -> str:
    """A parameter value as it is written in a params file or after ``-p NAME:=``."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, tuple):
        return '[' + ', '.join(map(value_text, value)) + ']'
    if value == '':
        return '""'
    return str(value)


def type_text(spec: ParameterSpec) -> str:
    """The ROS parameter type of ``spec`` (from its default, as ``declare_parameters`` declares it)."""
    default = spec.default
    if spec.is_string_array:
        return 'string array'
    for kind, name in ((bool, 'bool'), (int, 'integer'), (float, 'double'), (str, 'string')):
        if isinstance(default, kind):
            return name
    raise TypeError(f'parameter {spec.name!r}: no ROS type for default {default!r}')


def parameter_rows(specs: Sequence[ParameterSpec]) -> list[ParameterRow]:
    return [ParameterRow(spec.name, type_text(spec), value_text(spec.default),
                         tuple(value_text(choice) for choice in spec.choices or ()),
                         f'[{spec.value_range[0]}, {spec.value_range[1]}]' if spec.value_range is not None else '',
                         spec.description, spec.read_only) for spec in specs]


def help_lines(specs: Sequence[ParameterSpec], width: int = 100) -> list[str]:
    """The parameters as plain text, for a ``--help``: a line of name, type, default and what is
    allowed, then the description indented and wrapped to ``width``."""
    lines = []
    for row in parameter_rows(specs):
        facts = [row.type, f'default {row.default}'] + ([f'allowed {row.allowed}'] if row.allowed else [])
        if not row.read_only:
            facts.append('can be changed while running')
        lines.append(f'  {row.name} ({"; ".join(facts)})')
        lines += textwrap.wrap(row.description, width, initial_indent=' ' * 6, subsequent_indent=' ' * 6)
    return lines
