"""Starting nodes as processes (as ``ros2 launch`` would) and waiting on them from a tool's node.

The runner, bag replay and the benchmarks start the pipeline's nodes with ``node_command`` inside
``NodeProcesses`` and wait for their outputs with ``spin_until``, which also notices a node
process that died.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import rclpy
from rclpy.node import Node

from seg_perception.bringup.driving_pipeline import PipelineNode

STOP_TIMEOUT_SEC = 15.0


def node_command(node: PipelineNode, camera_topic: str, config: Optional[Path] = None,
                 overrides: Sequence[str] = (), name: Optional[str] = None) -> list[str]:
    """The command line ``ros2 launch`` would build for ``node``, run through this interpreter:
    its name (``name``, default the pipeline's), the camera remapping, the parameter file and
    ``NAME:=VALUE`` overrides."""
    command = [sys.executable, '-m', node.module, '--ros-args', '-r', f'__node:={name or node.name}',
               '-r', f'{node.camera_input}:={camera_topic}']
    if config is not None:
        command += ['--params-file', str(config)]
    for override in overrides:
        command += ['-p', override]
    return command


class NodeProcesses:
    """Node processes, stopped with SIGINT (as ``ros2 launch`` does) when leaving the block."""

    def __init__(self, commands: list[list[str]]) -> None:
        self.commands = commands
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> 'NodeProcesses':
        env = dict(os.environ)
        env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        self.processes = [subprocess.Popen(command, env=env) for command in self.commands]
        return self

    def check_alive(self) -> None:
        """Raise RuntimeError naming the first node process that has exited."""
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f'node process exited with code {process.returncode}: {" ".join(process.args)}')

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_SEC)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def spin_until(node: Node, condition: Callable[[], bool], timeout_sec: float,
               check: Callable[[], None] = lambda: None) -> bool:
    """Spin ``node`` until ``condition()`` holds (True) or ``timeout_sec`` passed (False); ``check``
    runs between spins (e.g. ``NodeProcesses.check_alive``). spin_once waits on the wait set, so
    no core is taken from the nodes under test."""
    deadline = time.monotonic() + timeout_sec
    while not condition():
        if time.monotonic() > deadline:
            return False
        check()
        rclpy.spin_once(node, timeout_sec=0.02)
    return True
