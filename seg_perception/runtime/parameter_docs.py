"""The parameter reference (docs/parameters.md), rendered from the tables the nodes declare from.

    python -m seg_perception.runtime.parameter_docs > docs/parameters.md          # regenerate it
    python -m seg_perception.runtime.parameter_docs --check docs/parameters.md    # exit 1 if it is stale

As Autoware renders its parameter tables from each package's schema files, the reference is made
from the ``ParameterSpec`` tables themselves: a segmentation node's ``task_parameters``,
``BACKEND_PARAMETERS``, ``CAMERA_INPUT_PARAMETERS`` and ``AUTOSTART``, in the order
``SegmentationNode`` declares them, the panoptic node's ``PANOPTIC_PARAMETERS`` and the image
source's ``IMAGE_SOURCE_PARAMETERS``. Each table
becomes rows of name, type, default, range or choices, and description (``parameter_text``), shown
as a markdown table here (``markdown_table``); each executable's ``--help`` prints the same rows as
plain text (``parameter_text.help_lines``).
"""
from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from seg_perception.messages.topics import PANOPTIC_NODE
from seg_perception.runtime.parameter_text import parameter_rows
from seg_perception.runtime.parameters import ParameterSpec

REGENERATE = 'python -m seg_perception.runtime.parameter_docs > docs/parameters.md'


@dataclass(frozen=True)
class ParameterTable:
    """One table of specs as a node declares it, and where it is written."""

    title: str
    source: str  # the table's name and module, e.g. 'BACKEND_PARAMETERS in seg_perception/runtime/parameters.py'
    specs: tuple[ParameterSpec, ...]


@dataclass(frozen=True)
class NodeParameters:
    """Every parameter one node declares, table by table in declaration order."""

    node: str  # node name: its section in config/driving.yaml
    executables: tuple[str, ...]
    page: str  # the node's page, relative to docs/
    tables: tuple[ParameterTable, ...]
    note: str = ''


def _cell(text: str) -> str:
    """Text safe in a markdown table cell: no column breaks, no HTML tags (``<node>``)."""
    return text.replace('|', '\\|').replace('<', '&lt;').replace('>', '&gt;')


def _code(text: str) -> str:
    return f'`{text}`' if text else ''


def markdown_table(specs: Sequence[ParameterSpec]) -> list[str]:
    """The parameters as a markdown table: name, type, default, range or choices, description."""
    lines = ['| name | type | default | range / choices | description |', '| --- | --- | --- | --- | --- |']
    for row in parameter_rows(specs):
        name = _code(row.name) + ('' if row.read_only else ' (dynamic)')
        allowed = ', '.join(_code(choice) for choice in row.choices) or _code(row.value_range)
        lines.append(f'| {name} | {row.type} | {_code(row.default)} | {_cell(allowed)} | {_cell(row.description)} |')
    return lines


def _module_path(obj: Any) -> str:
    return obj.__module__.replace('.', '/') + '.py'


def segmentation_node_parameters(executable: str, node_type: type) -> NodeParameters:
    """A segmentation node's tables, in the order ``SegmentationNode.__init__`` declares them."""
    from seg_perception.nodes.segmentation_node import AUTOSTART
    from seg_perception.runtime.camera_settings import CAMERA_INPUT_PARAMETERS
    from seg_perception.runtime.parameters import BACKEND_PARAMETERS

    lifecycle_executable = executable.replace('_node', '_lifecycle_node')
    return NodeParameters(
        node=node_type.node_name, executables=(executable, lifecycle_executable),
        page=f'nodes/{node_type.node_name}.md',
        tables=(
            ParameterTable('Task', f'`{node_type.__name__}.task_parameters` in `{_module_path(node_type)}`',
                           tuple(node_type.task_parameters)),
            ParameterTable('Backend and network input', '`BACKEND_PARAMETERS` in '
                           '`seg_perception/runtime/parameters.py`, shared by every segmentation node',
                           BACKEND_PARAMETERS),
            ParameterTable('Camera input', '`CAMERA_INPUT_PARAMETERS` in `seg_perception/runtime/camera_settings.py`, '
                           'shared by every segmentation node', CAMERA_INPUT_PARAMETERS),
            ParameterTable('Lifecycle', '`AUTOSTART` in `seg_perception/nodes/segmentation_node.py`', (AUTOSTART,)),
        ),
        note=f'`{lifecycle_executable}` is the same node with `autostart` defaulting to false.')


def node_parameters() -> list[NodeParameters]:
    """Every node's parameters: the driving pipeline's nodes (one per task), the panoptic fusion node,
    then the image source and the instance listener."""
    from seg_perception.bringup.driving_pipeline import DRIVING_PIPELINE
    from seg_perception.nodes.image_source import IMAGE_SOURCE_PARAMETERS, ImageSourceNode
    from seg_perception.nodes.instance_listener import InstanceListener
    from seg_perception.nodes.panoptic_segmentation import PANOPTIC_PARAMETERS, PanopticSegmentationNode

    nodes = [segmentation_node_parameters(node.executable, node.node_type()) for node in DRIVING_PIPELINE]
    nodes.append(NodeParameters(
        node=PANOPTIC_NODE, executables=('panoptic_node',), page=f'nodes/{PANOPTIC_NODE}.md',
        tables=(ParameterTable('Fusion and cameras',
                               f'`PANOPTIC_PARAMETERS` in `{_module_path(PanopticSegmentationNode)}`',
                               PANOPTIC_PARAMETERS),)))
    nodes.append(NodeParameters(
        node='image_source', executables=('image_source',), page='nodes/image_source.md',
        tables=(ParameterTable('Frames and topics', f'`IMAGE_SOURCE_PARAMETERS` in `{_module_path(ImageSourceNode)}`',
                               IMAGE_SOURCE_PARAMETERS),)))
    nodes.append(NodeParameters(node='instance_listener', executables=('instance_listener',),
                                page='nodes/instance_listener.md', tables=(),
                                note=f'`{InstanceListener.__name__}` declares no parameters.'))
    return nodes


def render(nodes: Optional[Sequence[NodeParameters]] = None) -> str:
    """docs/parameters.md."""
    nodes = node_parameters() if nodes is None else nodes
    specs = [spec for node in nodes for table in node.tables for spec in table.specs]
    lines = [
        '# Parameters',
        '',
        f'<!-- Generated by `{REGENERATE}` from the parameter tables in the code; do not edit by hand. -->',
        '',
        'Every parameter each node declares, generated from the `ParameterSpec` tables the nodes declare them from '
        '(`seg_perception/runtime/parameters.py`), so this page and `ros2 param describe <node> <name>` say the same. '
        'Defaults shared with `seg-models` come from `seg_models/configs.py`; the driving pipeline sets its values '
        'in `config/driving.yaml`. A value of the wrong type or out of range stops the node at start-up with exit '
        'code 2 ([start-up and exit codes](architecture.md#parameters-start-up-and-exit-codes)).',
    ]
    if all(spec.read_only for spec in specs):
        lines += ['', 'Every parameter is read-only: it is read at start-up (params file, `--ros-args -p`), not '
                      'changed while the node runs.']
    lines += ['', 'Nodes: ' + ', '.join(f'[{node.node}](#{node.node})' for node in nodes) + '.']
    for node in nodes:
        lines += ['', f'## {node.node}', '',
                  f'Executables: {", ".join(_code(name) for name in node.executables)}; '
                  f'topics and services: [its page]({node.page}).' + (f' {node.note}' if node.note else '')]
        for table in node.tables:
            lines += ['', f'**{table.title}** ({table.source}):', ''] + markdown_table(table.specs)
    return '\n'.join(lines) + '\n'


def check(path: Path, rendered: str) -> int:
    """0 when ``path`` holds ``rendered``; else 1, with the difference and the command that regenerates it."""
    current = path.read_text() if path.is_file() else ''
    if current == rendered:
        return 0
    diff = difflib.unified_diff(current.splitlines(), rendered.splitlines(), str(path), 'generated', lineterm='')
    print('\n'.join(list(diff)[:40]), file=sys.stderr)
    print(f'{path} is out of date with the parameter tables; regenerate it: {REGENERATE}', file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m seg_perception.runtime.parameter_docs',
                                     description='Print the parameter reference (docs/parameters.md), rendered from '
                                                 'the nodes\' parameter tables.')
    parser.add_argument('--check', metavar='FILE', type=Path,
                        help='compare FILE with the reference instead of printing it; exit 1 when they differ')
    args = parser.parse_args(argv)
    rendered = render()
    if args.check is not None:
        return check(args.check, rendered)
    sys.stdout.write(rendered)
    return 0


if __name__ == '__main__':
    sys.exit(main())
