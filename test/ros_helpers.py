"""Helpers for tests that run real nodes: a node in its own process (``NodeProcess``), a test node
that spins while waiting (``ProbeNode``), the camera probe that feeds nodes frames and keeps their
outputs (``CameraProbe``), and a lifecycle client (``LifecycleClient``)."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Callable, Optional

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image
from seg_perception_msgs.msg import LabelSet
from std_msgs.msg import Header

from seg_perception.messages.topics import LABEL_INFO_QOS, OUTPUT_QOS, stamp_key
from seg_perception.runtime.diagnostics import status_values
from shared_data import CAMVID_IMAGES, REPO_ROOT, SHARED_DATA  # noqa: F401 (re-exported to tests)


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


_stamps = itertools.count(1)  # each frame a probe sends in this test run has a stamp of its own


class CameraProbe(ProbeNode):
    """The test's side of a camera and of the outputs: publishes frames on camera topics and keeps
    what the node processes under test send back, by stamp, with waits that fail at once, showing the
    nodes' logs, when one of the processes has died.

        probe = CameraProbe('semantic_probe', node, camera='/camera/image_raw')
        labels = probe.listen('/segmentation/semantic')      # {(sec, nanosec): Image}, filled while spinning
        probe.connect()                                       # camera and outputs matched with the node's
        key = probe.send(array_to_image_msg(rgb, 'rgb8', Header()))  # a fresh stamp: the frame's key
        msg = probe.result(key)                               # the node's answer on the first output listened to
        probe.status('semantic_segmentation: camera pipeline', state='active')  # the next such /diagnostics

    Outputs: ``listen`` (messages with a header, by stamp), ``label_info`` (the label sets published,
    in order), ``statuses`` (every /diagnostics status received). Waits: ``connect``, ``result``,
    ``status``, ``wait_for`` (any condition), and ProbeNode's ``spin_until``/``spin_for``."""

    def __init__(self, name: str, nodes: NodeProcess | Iterable[NodeProcess], camera: Optional[str] = None,
                 camera_type=Image, timeout: float = 60.0) -> None:
        """``camera``: the topic ``send`` publishes on when given none, of ``camera_type`` (its publisher
        is made now); ``timeout``: how long the waits wait unless told."""
        super().__init__(name)
        self.processes = [nodes] if isinstance(nodes, NodeProcess) else list(nodes)
        self.default_camera, self.timeout = camera, timeout
        self.cameras: dict[str, object] = {}  # topic -> publisher
        self.outputs: dict[str, dict] = {}  # topic -> {stamp: message}
        self.listeners: dict[str, list] = {}  # topic -> subscriptions
        self.statuses: list[DiagnosticStatus] = []
        self.node.create_subscription(DiagnosticArray, '/diagnostics', lambda msg: self.statuses.extend(msg.status),
                                      50)
        if camera is not None:
            self.camera(camera, camera_type)

    # --- the node processes ---

    def alive(self) -> None:
        """Fails with a process's output once it has ended (the waits check this while they spin)."""
        for process in self.processes:
            process.assert_alive()

    def logs(self) -> str:
        return '\n'.join(process.output() for process in self.processes)

    def wait_for(self, condition: Callable[[], object], what: str, timeout: Optional[float] = None) -> None:
        """Spins until ``condition()`` holds; fails saying ``what`` did not happen, with the nodes' logs."""
        assert self.spin_until(condition, self.timeout if timeout is None else timeout, self.alive), \
            f'{what}; node logs:\n{self.logs()}'

    # --- cameras ---

    def camera(self, topic: Optional[str] = None, msg_type=Image, qos=OUTPUT_QOS):
        """The publisher on camera ``topic`` (default: the probe's camera), made on first use (with
        ``msg_type`` and ``qos``)."""
        topic = topic or self.default_camera
        if topic not in self.cameras:
            self.cameras[topic] = self.node.create_publisher(msg_type, topic, qos)
        return self.cameras[topic]

    def subscribed(self, topic: Optional[str] = None) -> bool:
        """Whether any node subscribes to camera ``topic`` (default: the probe's camera), by the ROS graph."""
        return self.node.count_subscribers(topic or self.default_camera) > 0

    def send(self, msg, topic: Optional[str] = None, frame_id: str = 'front_camera',
             stamp: Optional[Time] = None) -> tuple[int, int]:
        """Publishes ``msg`` (an Image or CompressedImage) on camera ``topic`` (default: the probe's
        camera) with a new header: ``stamp`` or one no other frame of this test run has. Returns the
        stamp as (sec, nanosec), the key of the node's outputs for this frame."""
        if stamp is None:
            stamp = Time(sec=1000 + next(_stamps), nanosec=250_000_000)
        msg.header = Header(stamp=stamp, frame_id=frame_id)
        self.camera(topic, type(msg)).publish(msg)
        return stamp_key(msg.header)

    # --- outputs ---

    def listen(self, topic: str, msg_type=Image, qos=OUTPUT_QOS) -> dict:
        """The first message of each stamp on ``topic``, by stamp (sec, nanosec), as they arrive."""
        store = self.outputs.setdefault(topic, {})
        self._subscribe(topic, msg_type, lambda msg: store.setdefault(stamp_key(msg.header), msg), qos)
        return store

    def label_info(self, topic: str) -> list[LabelSet]:
        """Every LabelSet received on ``topic`` (transient local: also the one published before)."""
        received = []
        self._subscribe(topic, LabelSet, received.append, LABEL_INFO_QOS)
        return received

    def stop_listening(self, topic: str) -> None:
        for subscription in self.listeners.pop(topic, []):
            self.node.destroy_subscription(subscription)

    def _subscribe(self, topic: str, msg_type, callback, qos) -> None:
        self.listeners.setdefault(topic, []).append(self.node.create_subscription(msg_type, topic, callback, qos))

    def connect(self, cameras: Mapping[str, type] | Iterable[str] | None = None,
                timeout: Optional[float] = None) -> None:
        """Waits until each camera publisher has matched a node's subscription and each output listened
        to has matched a node's publisher: a message published before its match is lost (volatile
        durability), whatever the graph already says. ``cameras``: topics, or topic -> message type
        (publishers made where missing); default: the cameras made so far."""
        if cameras is None:
            cameras = list(self.cameras)
        types = cameras if isinstance(cameras, Mapping) else dict.fromkeys(cameras, Image)
        publishers = [self.camera(topic, msg_type) for topic, msg_type in types.items()]
        subscriptions = [subscription for topic in self.listeners for subscription in self.listeners[topic]]
        self.wait_for(lambda: all(publisher.get_subscription_count() for publisher in publishers)
                      and all(subscription.get_publisher_count() for subscription in subscriptions),
                      f'cameras {list(types)} or outputs {list(self.listeners)} not connected', timeout)

    def result(self, key: tuple[int, int], store: Optional[dict] = None, timeout: Optional[float] = None):
        """The message of stamp ``key`` in ``store`` (default: the first output listened to), once it came."""
        store = next(iter(self.outputs.values())) if store is None else store
        self.wait_for(lambda: key in store, f'no output for stamp {key}', timeout)
        return store[key]

    # --- /diagnostics ---

    def received_statuses(self, name: str, **expected: str) -> list[DiagnosticStatus]:
        """The statuses named ``name`` received so far whose values include ``expected``, oldest first."""
        return _matching(self.statuses, name, expected)

    def status(self, name: str, timeout: Optional[float] = None, **expected: str) -> DiagnosticStatus:
        """The first status named ``name`` received from now on whose values include ``expected``."""
        seen = len(self.statuses)
        self.wait_for(lambda: _matching(self.statuses[seen:], name, expected), f'no status {name!r} with {expected}',
                      timeout)
        return _matching(self.statuses[seen:], name, expected)[0]


def _matching(statuses: list[DiagnosticStatus], name: str, expected: dict[str, str]) -> list[DiagnosticStatus]:
    return [status for status in statuses if status.name == name
            and all(status_values(status).get(key) == value for key, value in expected.items())]


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
