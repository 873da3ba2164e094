"""The colcon install tree is complete, and the launch file, config and nodes agree with each other."""
from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.parameter import parameter_value_to_python
from sensor_msgs.msg import Image

from launch_recorder import LaunchDescription, OpaqueFunction, load_launch_file, resolve
from ros_helpers import NodeProcess, ProbeNode, call_service
from seg_perception.bringup.driving_pipeline import DRIVING_PIPELINE, PACKAGE, PANOPTIC_FUSION
from seg_perception.messages.topics import OUTPUT_QOS, OVERLAY_OUTPUT, SEMANTIC_NODE, camera_output_topic

pytestmark = pytest.mark.ros

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL = REPO_ROOT / 'install'
SHARE = INSTALL / PACKAGE / 'share' / PACKAGE


def console_scripts() -> dict[str, str]:
    """executable -> 'module:function', read from setup.py's entry points."""
    tree = ast.parse((REPO_ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == 'console_scripts'
                                              for k in node.keys):
            scripts = ast.literal_eval(node.values[0])
            return dict(re.fullmatch(r'\s*(\S+)\s*=\s*(\S+)\s*', line).groups() for line in scripts)
    raise AssertionError('setup.py declares no console_scripts')


def test_install_tree_holds_launch_config_markers_and_entry_points():
    for relative in ('launch/driving.launch.py', 'config/driving.yaml'):
        assert (SHARE / relative).read_bytes() == (REPO_ROOT / relative).read_bytes(), relative
    assert (SHARE / 'package.xml').is_file()
    assert (INSTALL / PACKAGE / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE).is_file()
    for executable, target in console_scripts().items():
        script = INSTALL / PACKAGE / 'lib' / PACKAGE / executable
        assert script.is_file() and os.access(script, os.X_OK), f'{executable} not installed under lib/{PACKAGE}'
        module = target.split(':')[0]
        assert module in script.read_text() or executable in script.read_text()
    msgs = INSTALL / 'seg_perception_msgs'
    for name in ('InstanceMask', 'InstanceMaskArray', 'SegmentationClass', 'LabelSet'):
        assert (msgs / 'share' / 'seg_perception_msgs' / 'msg' / f'{name}.msg').is_file()


def test_installed_entry_point_runs_the_node(tmp_path):
    """The installed script starts the real node (here it stops on a refused parameter value)."""
    script = INSTALL / PACKAGE / 'lib' / PACKAGE / 'semantic_node'
    process = NodeProcess('seg_perception.nodes.semantic_segmentation', ['-p', 'output_stride:=4'], tmp_path / 'log')
    process.command = [str(script), '--ros-args', '-p', 'output_stride:=4']
    with process:
        assert process.wait(timeout=90) == 2
        assert "parameter 'output_stride' = 4 is not allowed" in process.output()


def recorded_launch(monkeypatch, **arguments):
    module = load_launch_file(SHARE / 'launch' / 'driving.launch.py', monkeypatch)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    context = {entity.name: entity.default_value for entity in description.entities if hasattr(entity, 'name')}
    context.update(arguments)
    nodes = []
    for entity in description.entities:
        if isinstance(entity, OpaqueFunction):
            nodes += entity.function(context)
    return context, nodes


def test_launch_file_starts_every_pipeline_node_with_its_executable(monkeypatch):
    context, nodes = recorded_launch(monkeypatch)
    assert context['params_file'] == str(SHARE / 'config' / 'driving.yaml')
    scripts = console_scripts()
    assert [(n.kwargs['executable'], n.kwargs['name']) for n in nodes] == \
        [(p.executable, p.name) for p in DRIVING_PIPELINE]
    for node, pipeline_node in zip(nodes, DRIVING_PIPELINE):
        assert node.kwargs['package'] == PACKAGE
        assert scripts[node.kwargs['executable']] == pipeline_node.entry_point
        remappings = [(source, resolve(target, context)) for source, target in node.kwargs['remappings']]
        assert remappings == [('image', '/camera/image_raw')]


def test_launch_panoptic_argument_adds_the_fusion_node(monkeypatch):
    _, nodes = recorded_launch(monkeypatch)
    assert PANOPTIC_FUSION.name not in [n.kwargs['name'] for n in nodes]  # off by default
    _, nodes = recorded_launch(monkeypatch, panoptic='true', cameras='[/front/image_raw]')
    assert [n.kwargs['name'] for n in nodes] == [p.name for p in DRIVING_PIPELINE + (PANOPTIC_FUSION,)]
    fusion = nodes[-1]
    assert console_scripts()[fusion.kwargs['executable']] == PANOPTIC_FUSION.entry_point
    assert fusion.kwargs['parameters'][1] == {'use_sim_time': False, 'cameras': ['/front/image_raw']}


def test_launch_checkpoint_argument_overrides_only_when_given(monkeypatch):
    _, nodes = recorded_launch(monkeypatch)
    assert all(set(n.kwargs['parameters'][1]) == {'use_sim_time'} for n in nodes)  # nor cameras, unless given
    arguments = {p.checkpoint_argument: f'/weights/{p.name}.pth' for p in DRIVING_PIPELINE}
    _, nodes = recorded_launch(monkeypatch, use_sim_time='true', **arguments)
    for node, pipeline_node in zip(nodes, DRIVING_PIPELINE):
        assert node.kwargs['parameters'][1] == {'use_sim_time': True,
                                                'checkpoint': f'/weights/{pipeline_node.name}.pth'}


def _call(probe: ProbeNode, process: NodeProcess, client, request):
    # The services exist as soon as the node does, but are answered once it spins, after it was built:
    # on a 2-core runner the instance node's first start exports its graph and times the backends
    # (backend auto) for a minute or more. Parameter queries are idempotent, so they are resent.
    return call_service(probe, client, request, 240, resend_every=10.0, server=process)


def _as_launched(node, context, tmp_path) -> NodeProcess:
    """The process the launch file's ``node`` starts: its params file, launch overrides and remappings."""
    name = node.kwargs['name']
    ros_args = ['-r', f'__node:={name}', '--params-file', resolve(node.kwargs['parameters'][0], context)]
    ros_args += [arg for source, target in node.kwargs['remappings']
                 for arg in ('-r', f'{source}:={resolve(target, context)}')]
    ros_args += [arg for key, value in node.kwargs['parameters'][1].items()
                 for arg in ('-p', f'{key}:={str(value).lower()}')]
    module = console_scripts()[node.kwargs['executable']].split(':')[0]
    return NodeProcess(module, ros_args, tmp_path / f'{name}.log')


def _check_launched_node(node, context, tmp_path, camera_topics: list[str]) -> None:
    """Start ``node`` as launch would; it declares and holds every config and launch value, and (lazy)
    subscribes to each camera once someone listens to that camera's overlay."""
    name = node.kwargs['name']
    from_config = yaml.safe_load(Path(context['params_file']).read_text())[name]['ros__parameters']
    from_launch = node.kwargs['parameters'][1]
    with _as_launched(node, context, tmp_path) as process:
        probe = ProbeNode('launch_check_probe')
        try:
            listed = _call(probe, process, probe.node.create_client(ListParameters, f'/{name}/list_parameters'),
                           ListParameters.Request())
            declared = set(listed.result.names)
            assert set(from_config) <= declared, f'{name} does not declare {set(from_config) - declared}'
            assert set(from_launch) <= declared, f'{name} does not declare {set(from_launch) - declared}'
            expected = {**from_config, **from_launch}
            values = _call(probe, process, probe.node.create_client(GetParameters, f'/{name}/get_parameters'),
                           GetParameters.Request(names=list(expected)))
            actual = dict(zip(expected, map(parameter_value_to_python, values.values)))
            assert actual == expected, f'{name} did not take the config and launch values'
            output = next(p.output for p in DRIVING_PIPELINE if p.name == name)
            entries = from_launch.get('cameras', from_config['cameras'])
            for entry, camera_topic in zip(entries, camera_topics):
                probe.node.create_subscription(Image, camera_output_topic(entry, name, OVERLAY_OUTPUT),
                                               lambda msg: None, OUTPUT_QOS)
                assert probe.spin_until(
                    lambda: probe.node.count_publishers(camera_output_topic(entry, name, output)) > 0
                    and probe.node.count_subscribers(camera_topic) > 0, 30), f'{name}: {camera_topic} not served'
        finally:
            probe.close()
        assert process.alive(), process.output()


def test_nodes_declare_every_parameter_launch_and_config_give_them(monkeypatch, tmp_path):
    """Start each node the way the launch file does and ask it, over ROS services, what it declared."""
    context, nodes = recorded_launch(monkeypatch, camera_topic='/launch_check/image_raw')
    for node in nodes:
        _check_launched_node(node, context, tmp_path, ['/launch_check/image_raw'])


def test_launch_cameras_argument_reaches_the_nodes(monkeypatch, tmp_path):
    cameras = ['/launch_cams/front/image_raw', '/launch_cams/rear/image_raw']
    context, nodes = recorded_launch(monkeypatch, cameras=f'[{", ".join(cameras)}]')
    assert all(node.kwargs['parameters'][1]['cameras'] == cameras for node in nodes)
    semantic = next(node for node in nodes if node.kwargs['name'] == SEMANTIC_NODE)
    _check_launched_node(semantic, context, tmp_path, cameras)


@pytest.mark.skipif(not (REPO_ROOT / 'env.sh').is_file(), reason='env.sh is written by scripts/bootstrap.sh')
def test_env_sh_puts_every_executable_on_path_also_under_set_u():
    """README tells users to `source env.sh` and run run_pipeline, seg_bag and seg-models: they were
    'command not found', and sourcing failed under `set -u` (COLCON_CURRENT_PREFIX unbound)."""
    names = sorted(console_scripts())
    script = f'set -eu; source env.sh; for name in {" ".join(names)}; do command -v "$name"; done; seg-models --help'
    fresh_shell = {**os.environ, 'PATH': '/usr/bin:/bin'}  # none of the venv or install tree on PATH yet
    done = subprocess.run(['bash', '-c', script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=fresh_shell)
    assert done.returncode == 0, done.stderr
    found = done.stdout.splitlines()[:len(names)]
    assert [Path(path).name for path in found] == names
    assert all(Path(path).parent == INSTALL / PACKAGE / 'lib' / PACKAGE for path in found)
    assert 'usage: seg-models' in done.stdout
