"""Stand-ins for the launch / launch_ros classes driving.launch.py uses, recording their arguments.

``launch`` is not installable here; these let a test execute the real launch file and read which
nodes, parameters and remappings it asks for. Behaviour under real ``ros2 launch`` is covered by
test_driving_launch.py, which runs where launch_testing is installed.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description=''):
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    def __init__(self, function):
        self.function = function


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


class Node:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def load_launch_file(path: Path, monkeypatch) -> types.ModuleType:
    """Import ``path`` with the stand-ins in place of launch and launch_ros."""
    stand_ins = {
        'launch': types.SimpleNamespace(LaunchDescription=LaunchDescription),
        'launch.actions': types.SimpleNamespace(DeclareLaunchArgument=DeclareLaunchArgument,
                                                OpaqueFunction=OpaqueFunction),
        'launch.substitutions': types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        'launch_ros': types.SimpleNamespace(),
        'launch_ros.actions': types.SimpleNamespace(Node=Node),
    }
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('driving_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolve(value, context):
    """A launch argument value with LaunchConfigurations substituted from ``context``."""
    return value.perform(context) if isinstance(value, LaunchConfiguration) else value
