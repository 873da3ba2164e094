"""One ``main`` for every node executable: init, spin, clean shutdown, clear start-up errors."""
from __future__ import annotations

import logging
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from seg_models.backends.base import BackendError
from seg_models.checkpoints import CheckpointError
from seg_perception.runtime.parameters import ParameterValueError

# Start-up failures a user can fix (bad parameter, checkpoint, backend): reported in one line.
STARTUP_ERRORS = (ParameterValueError, CheckpointError, BackendError, ValueError, FileNotFoundError)


def run_node(node_factory: Callable[[], Node], args=None) -> int:
    """Create the node, spin it until Ctrl-C or shutdown; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    rclpy.init(args=args)
    node = None
    try:
        node = node_factory()
        rclpy.spin(node)
    except STARTUP_ERRORS as error:
        if node is not None:
            raise
        rclpy.logging.get_logger('seg_perception').fatal(f'cannot start: {error}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main_for(node_factory: Callable[[], Node]) -> None:
    sys.exit(run_node(node_factory, sys.argv))
