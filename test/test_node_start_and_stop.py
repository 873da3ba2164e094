"""Node executables at their edges, in real processes: refused parameters (command line and params
file) stop start-up with one line and exit code 2; SIGINT twice (terminal and launch on Ctrl-C)
and SIGTERM end a serving node with exit code 0 and nothing alarming in its output."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from seg_perception_msgs.msg import FrameTiming

from ros_helpers import NodeProcess, ProbeNode
from seg_perception.messages.topics import OUTPUT_QOS

pytestmark = pytest.mark.ros

SEMANTIC_MODULE = 'seg_perception.nodes.semantic_segmentation'
INSTANCE_MODULE = 'seg_perception.nodes.instance_segmentation'
IMAGE_SOURCE_MODULE = 'seg_perception.nodes.image_source'
START_TIMEOUT = 180.0  # several node processes start at once on a 2-core runner
STOP_TIMEOUT = 15.0
ALARMING = ('Traceback', '[ERROR]', 'Failed to publish log message')


def _params_file(path: Path, node_name: str, lines: str) -> Path:
    path.write_text(f'{node_name}:\n  ros__parameters:\n{lines}')
    return path


def test_refused_parameters_stop_start_up_with_one_line_and_exit_code_2(tmp_path):
    """Every kind of refusal rclpy or the node makes, from the command line and from params files;
    each names the parameter, the value and what is allowed (started together: each stops before
    any model is built)."""
    wrong_type_file = _params_file(tmp_path / 'wrong_type.yaml', 'semantic_segmentation', '    input_height: abc\n')
    out_of_range_file = _params_file(tmp_path / 'range.yaml', 'semantic_segmentation', '    overlay_alpha: 1.5\n')
    malformed_file = _params_file(tmp_path / 'malformed.yaml', 'semantic_segmentation', '    input_height: [1\n')
    cases = {
        'range': (SEMANTIC_MODULE, ['-p', 'input_height:=9000'],
                  "parameter 'input_height' = 9000 is not allowed; it takes an integer in [0, 8192]"),
        'type': (SEMANTIC_MODULE, ['-p', 'input_height:=abc'],
                 "parameter 'input_height' = 'abc' is not allowed; it takes an integer in [0, 8192]"),
        'bool': (SEMANTIC_MODULE, ['-p', 'lazy:=maybe'], "parameter 'lazy' = 'maybe' is not allowed; "
                                                         "it takes true or false"),
        'int for double': (SEMANTIC_MODULE, ['-p', 'diagnostics_period_sec:=100'],  # an integer is taken, in range
                           "parameter 'diagnostics_period_sec' = 100.0 is not allowed; it takes a number with a "
                           "decimal point (e.g. 2.0) in [0.1, 60.0]"),
        'choice': (INSTANCE_MODULE, ['-p', 'backend:=tpu'],
                   "parameter 'backend' = 'tpu' is not allowed; it takes one of: auto, pytorch"),
        'list': (IMAGE_SOURCE_MODULE, ['-p', 'cameras:=[1, 2]'],
                 "parameter 'cameras' = [1, 2] is not allowed; it takes a list of strings"),
        'file type': (SEMANTIC_MODULE, ['--params-file', str(wrong_type_file)],
                      "parameter 'input_height' = 'abc' is not allowed"),
        'file range': (SEMANTIC_MODULE, ['--params-file', str(out_of_range_file)],
                       "parameter 'overlay_alpha' = 1.5 is not allowed; it takes a number with a decimal "
                       "point (e.g. 2.0) in [0.0, 1.0]"),
        'file malformed': (SEMANTIC_MODULE, ['--params-file', str(malformed_file)],
                           f"cannot start: Couldn't parse params file: '--params-file {malformed_file}'"),
        'file missing': (SEMANTIC_MODULE, ['--params-file', str(tmp_path / 'absent.yaml')],
                         'Error opening YAML file'),
    }
    processes = {name: NodeProcess(module, ros_args, tmp_path / f'{name.replace(" ", "_")}.log')
                 for name, (module, ros_args, _) in cases.items()}
    for process in processes.values():
        process.__enter__()
    try:
        for name, (_, _, expected) in cases.items():
            process = processes[name]
            assert process.wait(timeout=START_TIMEOUT) == 2, f'{name}:\n{process.output()}'
            output = process.output()
            assert expected in output, f'{name}:\n{output}'
            fatal = [line for line in output.splitlines() if 'cannot start' in line]
            assert len(fatal) == 1 and 'Traceback' not in output, f'{name}:\n{output}'
    finally:
        for process in processes.values():
            process.__exit__(None, None, None)


def test_sigint_twice_and_sigterm_end_serving_nodes_with_exit_code_0(tmp_path):
    """Nodes busy with frames (a frame in flight when the signal comes) are stopped the ways they
    are in the field: SIGINT twice in quick succession (Ctrl-C reaches the node from the terminal
    and from ros2 launch) and SIGTERM (launch's escalation, systemd, docker stop). On the PyTorch
    backend: no export or backend measurement before the signals (80 s of three concurrent starts on
    2 cores); nodes on ONNX Runtime are stopped by SIGINT at the end of every other node test."""
    camera = '/start_stop_test/image'
    stops = {'semantic_sigint_twice': (SEMANTIC_MODULE, [signal.SIGINT, signal.SIGINT]),
             'semantic_sigterm': (SEMANTIC_MODULE, [signal.SIGTERM]),
             'instance_sigint_twice': (INSTANCE_MODULE, [signal.SIGINT, signal.SIGINT])}
    source = NodeProcess(IMAGE_SOURCE_MODULE, ['-p', f'cameras:=[{camera}]', '-p', 'rate_hz:=15.0'],
                         tmp_path / 'image_source.log')
    nodes = {name: NodeProcess(module, ['-r', f'__node:={name}', '-r', f'image:={camera}', '-p', 'lazy:=false',
                                        '-p', 'input_height:=256', '-p', 'input_width:=512', '-p', 'backend:=pytorch'],
                               tmp_path / f'{name}.log')
             for name, (module, _) in stops.items()}
    answered: dict[str, int] = {name: 0 for name in nodes}
    probe = ProbeNode('start_stop_probe')
    try:
        for name in nodes:
            probe.node.create_subscription(FrameTiming, f'/{name}/processing_time',
                                           lambda _msg, name=name: answered.__setitem__(name, answered[name] + 1),
                                           OUTPUT_QOS)
        with source:
            for node in nodes.values():
                node.__enter__()

            def check_alive():
                for node in nodes.values():
                    node.assert_alive()

            assert probe.spin_until(lambda: all(count >= 2 for count in answered.values()), START_TIMEOUT,
                                    check_alive), f'not every node answered: {answered}'
            for name, (_, signals) in stops.items():
                for signum in signals:
                    nodes[name].process.send_signal(signum)
                    time.sleep(0.01)
            for name, node in nodes.items():
                assert node.wait(timeout=STOP_TIMEOUT) == 0, f'{name}:\n{node.output()}'
            source.process.send_signal(signal.SIGTERM)
            assert source.wait(timeout=STOP_TIMEOUT) == 0, source.output()
        for name, node in [*nodes.items(), ('image_source', source)]:
            output = node.output()
            assert not [text for text in ALARMING if text in output], f'{name}:\n{output}'
    finally:
        for node in nodes.values():
            if node.process is not None:
                node.__exit__(None, None, None)
        probe.close()
