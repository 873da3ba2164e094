"""Helpers for tests that run real nodes: node processes, a test node, waiting on messages."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from shared_data import CAMVID_IMAGES, REPO_ROOT, SHARED_DATA  # noqa: F401 (re-exported to tests)


def driving_frames(count: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """RGB CamVid frames (480x360) where ../shared is present, generated frames of that size otherwise;
    resized to ``size`` (height, width) when given."""
    from seg_models.data.frame_sources import synthetic_frames

    paths = sorted(CAMVID_IMAGES.glob('*.png'))[:count] if CAMVID_IMAGES.is_dir() else []
    if paths:
        frames = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in paths]
    else:
        frames = [frame.rgb for frame in synthetic_frames(count, width=480, height=360)]
    if size is not None:
        frames = [cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA) for frame in frames]
    return frames


class NodeProcess:
    """A node in its own process (as launch starts it), stopped with SIGINT; output kept for asserts."""

    def __init__(self, module: str, ros_args: list[str], log_path: Path) -> None:
        self.command = [sys.executable, '-m', module, '--ros-args', *ros_args]
        self.log_path = log_path
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> 'NodeProcess':
        self._log = open(self.log_path, 'w')
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                        env=dict(os.environ))
        return self

    def alive(self) -> bool:
        return self.process.poll() is None

    def assert_alive(self) -> None:
        """Fails with the node's output once its process has ended (a ``check`` for ``spin_until``)."""
        assert self.alive(), f'{self.log_path.stem} ({self.command[2]}) died:\n{self.output()}'

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class ProbeNode:
    """An rclpy node with its own context, spun by the waiting helpers."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], bool], timeout: float, check: Callable[[], None] = lambda: None
                   ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            check()
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def call_service(probe: ProbeNode, client, request, timeout: float, resend_every: Optional[float] = None,
                 server: Optional[NodeProcess] = None):
    """Calls ``client`` and returns its answer, failing after ``timeout`` seconds, or at once with its
    output when the ``server`` process has ended.

    Fast DDS drops a response when the server has not yet discovered the client's reply reader (it waits
    100 ms for it, ros2/rmw_fastrtps#467), which a loaded 2-core runner makes likely on a first call; so an
    idempotent request is sent again every ``resend_every`` seconds until one is answered."""
    assert client.wait_for_service(timeout_sec=timeout), f'{client.srv_name} not available'
    check = server.assert_alive if server is not None else lambda: None
    deadline = time.monotonic() + timeout
    while True:
        future = client.call_async(request)
        remaining = deadline - time.monotonic()
        if probe.spin_until(future.done, remaining if resend_every is None else min(resend_every, remaining),
                            check):
            return future.result()
        client.remove_pending_request(future)
        assert time.monotonic() < deadline, \
            f'{client.srv_name} did not answer' + (f':\n{server.output()}' if server is not None else '')


class LifecycleClient:
    """Asks a lifecycle node (in process ``server``) for its state and requests transitions, over its services.

    ``get_state`` is idempotent and is resent until answered (see ``call_service``). ``change_state`` is
    not, and is sent once, after a ``get_state`` was answered: its client is created first, so its reply
    reader is announced to the node before ``get_state``'s, on the same reliable, ordered discovery
    writer, and that answer shows the node knows both."""

    def __init__(self, probe: ProbeNode, server: NodeProcess, node_name: str, timeout: float) -> None:
        self.probe, self.server, self.timeout = probe, server, timeout
        self.change_state_client = probe.node.create_client(ChangeState, f'{node_name}/change_state')
        self.get_state_client = probe.node.create_client(GetState, f'{node_name}/get_state')
        self.answered = False

    def state(self) -> int:
        state = call_service(self.probe, self.get_state_client, GetState.Request(), self.timeout,
                             resend_every=5.0, server=self.server).current_state.id
        self.answered = True
        return state

    def change(self, transition: int) -> bool:
        if not self.answered:
            self.state()
        return call_service(self.probe, self.change_state_client,
                            ChangeState.Request(transition=Transition(id=transition)), self.timeout,
                            server=self.server).success
