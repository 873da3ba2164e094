"""One ``main`` for every node executable: init, spin, clean shutdown, clear start-up errors.

SIGINT and SIGTERM (Ctrl-C, ``ros2 launch`` stopping its nodes: the terminal and launch each send
one SIGINT) end the spin loop; the node is then torn down while its context still works (the
worker finishes its frame, nothing publishes into a dead context, the last log lines reach
/rosout), and further signals during the teardown are ignored instead of raising into it.

``--help`` (also after ``--ros-args``) prints the executable's purpose and every parameter it
declares, from the same tables it declares them from, and exits 0 without starting ROS.

Exit codes: 0 after Ctrl-C, SIGTERM or a shutdown (or ``--help``); 2 for a usage error (a parameter of the wrong
type or out of range, an unreadable params file or ``--ros-args`` rule); 1 for any other start-up
failure a user can fix (checkpoint, backend, model files). Each is one ``cannot start: ...`` line.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
from typing import Callable, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from seg_models.backends.base import BackendError
from seg_models.checkpoints.reading import CheckpointError
from seg_perception.messages.dds_profile import use_large_images_profile
from seg_perception.runtime.parameters import ParameterSpec, ParameterValueError

# Start-up failures a user can fix (bad parameter, checkpoint, backend): reported in one line.
STARTUP_ERRORS = (ParameterValueError, CheckpointError, BackendError, ValueError, FileNotFoundError)
EXIT_STARTUP_FAILED = 1
EXIT_USAGE = 2

# How often the spin loop looks at the stop request: the longest a signal waits to be acted on.
STOP_POLL_SEC = 0.1

# rcl's "failed to initialize rcl: <what>, at /project/src/parse.c:776, at ...": keep <what>.
_RCL_SOURCE_TRAIL = re.compile(r'(, at [^,]+:\d+)+$')


class StopRequest:
    """The handler of SIGINT and SIGTERM. While the node is being built (``starting``), the first
    signal aborts start-up (KeyboardInterrupt, as Python's default would); after that, a signal only
    asks the spin loop to stop. Any signal after the first is ignored: the teardown runs to its end."""

    def __init__(self) -> None:
        self.requested = False
        self.starting = True

    def __call__(self, signum: int, frame) -> None:
        first, self.requested = not self.requested, True
        if first and self.starting:
            raise KeyboardInterrupt

    def install(self) -> 'StopRequest':
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self)
        return self


class RosLogHandler(logging.Handler):
    """Python logging (seg_models, the libraries) through rclpy's logger of the same name: one format
    and one stream for everything a node says, as ROS tools expect."""

    LEVELS = ((logging.ERROR, 'error'), (logging.WARNING, 'warning'), (logging.INFO, 'info'))

    def emit(self, record: logging.LogRecord) -> None:
        method = next((name for level, name in self.LEVELS if record.levelno >= level), 'debug')
        try:
            getattr(rclpy.logging.get_logger(record.name), method)(self.format(record))
        except Exception:  # noqa: BLE001 - a log line must never take the node down
            self.handleError(record)


def run_node(node_factory: Callable[[], Node], args=None) -> int:
    """Create the node, spin it until SIGINT, SIGTERM or shutdown; returns the process exit code."""
    handler = RosLogHandler()
    handler.setFormatter(logging.Formatter('%(message)s'))  # rclpy adds severity, time and logger name
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logger = rclpy.logging.get_logger('seg_perception')
    stop = StopRequest().install()
    use_large_images_profile(os.environ)  # before the first participant: camera-sized messages arrive
    try:
        # No rclpy signal handlers: they would shut the context down before the node is torn down.
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except rclpy_implementation.RCLError as error:  # a params file or --ros-args rule rcl cannot read
        logger.fatal(f'cannot start: {_rcl_reason(error)}')
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
    node = None
    try:
        node = node_factory()
        stop.starting = False
        _spin_until_stopped(node, stop)
    except STARTUP_ERRORS as error:
        if node is not None:
            raise
        logger.fatal(f'cannot start: {error}')
        return EXIT_USAGE if isinstance(error, ParameterValueError) else EXIT_STARTUP_FAILED
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.starting = False  # from here on a signal raises nothing: the teardown runs to its end
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin_until_stopped(node: Node, stop: StopRequest) -> None:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.requested and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_SEC)
    finally:
        executor.remove_node(node)
        executor.shutdown()


def _rcl_reason(error: Exception) -> str:
    return _RCL_SOURCE_TRAIL.sub('', str(error)).removeprefix('failed to initialize rcl: ')


HELP_FLAGS = ('--help', '-h')


def help_text(executable: str, summary: str, parameters: Sequence[ParameterSpec]) -> str:
    """What ``executable --help`` prints: usage, the node's purpose, its parameters."""
    from seg_perception.runtime.parameter_text import help_lines

    lines = [f'usage: {executable} [--ros-args [-p NAME:=VALUE ...] [--params-file FILE] [-r FROM:=TO ...]]', '',
             summary.strip(), '']
    if parameters:
        lines += ['parameters (-p NAME:=VALUE, or a --params-file section):'] + help_lines(parameters)
    else:
        lines.append('parameters: none')
    return '\n'.join(lines)


def main_for(node_factory: Callable[[], Node], summary: str = '',
             parameters: Optional[Callable[[], Sequence[ParameterSpec]]] = None) -> None:
    """The executable's main: ``--help`` anywhere in the arguments prints ``help_text`` (the
    ``summary`` and the ``parameters()`` the node declares) and exits 0; otherwise ``run_node``."""
    if any(argument in HELP_FLAGS for argument in sys.argv[1:]):
        print(help_text(os.path.basename(sys.argv[0]), summary, parameters() if parameters else ()))
        sys.exit(0)
    sys.exit(run_node(node_factory, sys.argv))
