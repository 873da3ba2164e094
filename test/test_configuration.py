"""One set of defaults: config/driving.yaml, the nodes' parameter tables, the seg_models configs and
the seg-models CLI agree, so a default (architecture, backend, input size ...) cannot drift apart."""
from pathlib import Path

import pytest
import yaml

from seg_models.cli import build_parser, model_config
from seg_models.configs import InstanceModelConfig, SemanticModelConfig
from seg_perception.bringup.driving_pipeline import DRIVING_PIPELINE, PANOPTIC_FUSION
from seg_perception.messages.topics import INSTANCE_NODE, PANOPTIC_NODE, SEMANTIC_NODE
from seg_perception.nodes.instance_segmentation import INSTANCE_PARAMETERS, instance_config_from_parameters
from seg_perception.nodes.panoptic_segmentation import PANOPTIC_PARAMETERS
from seg_perception.nodes.segmentation_node import AUTOSTART
from seg_perception.nodes.semantic_segmentation import SEMANTIC_PARAMETERS, semantic_config_from_parameters
from seg_perception.runtime.camera_settings import CAMERA_INPUT_PARAMETERS
from seg_perception.runtime.parameters import BACKEND_PARAMETERS

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((REPO_ROOT / 'config' / 'driving.yaml').read_text())
NODES = {
    SEMANTIC_NODE: ('semantic', SEMANTIC_PARAMETERS, semantic_config_from_parameters, SemanticModelConfig),
    INSTANCE_NODE: ('instance', INSTANCE_PARAMETERS, instance_config_from_parameters, InstanceModelConfig),
}
OPTIONAL_IN_CONFIG = {'class_filter'}  # shown commented out in driving.yaml: no filter by default


def configured(node_name: str) -> dict:
    """driving.yaml's values for the node, string lists as the tuples declare_parameters returns."""
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in CONFIG[node_name]['ros__parameters'].items()}


def declared(node_name: str) -> dict:
    task_parameters = NODES[node_name][1]
    return {spec.name: spec for spec in task_parameters + BACKEND_PARAMETERS + CAMERA_INPUT_PARAMETERS + (AUTOSTART,)}


@pytest.mark.parametrize('node_name', list(NODES))
def test_driving_yaml_sets_every_declared_parameter_to_a_valid_value(node_name):
    specs, values = declared(node_name), configured(node_name)
    assert set(values) <= set(specs), f'undeclared in driving.yaml: {set(values) - set(specs)}'
    assert set(specs) - set(values) <= OPTIONAL_IN_CONFIG, f'missing from driving.yaml: {set(specs) - set(values)}'
    for name, value in values.items():
        spec = specs[name]
        assert type(value) is type(spec.default), f'{name}: {value!r} is not a {type(spec.default).__name__}'
        spec.check(value)


@pytest.mark.parametrize('node_name', list(NODES))
def test_driving_yaml_is_the_defaults_written_out(node_name):
    """A node started without driving.yaml runs as deployed: in particular at a 512x1024 network input,
    not a full-resolution network on whatever size arrives."""
    specs, values = declared(node_name), configured(node_name)
    differing = {name: value for name, value in values.items() if value != specs[name].default}
    assert differing == {}
    assert (specs['input_height'].default, specs['input_width'].default) == (512, 1024)


@pytest.mark.parametrize('node_name', list(NODES))
def test_parameter_defaults_build_the_seg_models_default_config(node_name):
    _, task_parameters, config_from_parameters, config_type = NODES[node_name]
    defaults = {name: spec.default for name, spec in declared(node_name).items()}
    assert config_from_parameters(defaults) == config_type()


@pytest.mark.parametrize('node_name', list(NODES))
def test_seg_models_cli_builds_what_the_driving_yaml_node_loads(node_name):
    """``seg-models build --task T`` without flags pre-builds exactly the model the node loads."""
    task, _, config_from_parameters, _ = NODES[node_name]
    values = {name: spec.default for name, spec in declared(node_name).items()}
    values.update(configured(node_name))
    cli_config = model_config(build_parser().parse_args(['build', '--task', task]))
    assert cli_config == config_from_parameters(values)


def test_the_instance_graph_keeps_low_scores_for_the_tracker_only_while_tracking():
    values = {name: spec.default for name, spec in declared(INSTANCE_NODE).items()}
    tracking = instance_config_from_parameters({**values, 'track_low_score': 0.2}).output_filter
    assert (tracking.track_low_score, tracking.lowest_kept_score) == (0.2, 0.2)
    untracked = instance_config_from_parameters({**values, 'tracking': False, 'track_low_score': 0.2}).output_filter
    assert (untracked.track_low_score, untracked.lowest_kept_score) == (None, values['score_threshold'])
    higher = instance_config_from_parameters({**values, 'track_low_score': 0.55, 'track_high_score': 0.7})
    assert higher.output_filter.lowest_kept_score == values['score_threshold']  # nothing below the published score


def test_every_driving_pipeline_node_has_a_config_section():
    assert {node.name for node in DRIVING_PIPELINE + (PANOPTIC_FUSION,)} == set(CONFIG) == set(NODES) | {PANOPTIC_NODE}


def test_driving_yaml_writes_out_the_panoptic_nodes_defaults():
    specs = {spec.name: spec for spec in PANOPTIC_PARAMETERS}
    values = configured(PANOPTIC_NODE)
    assert set(values) == set(specs)
    assert {name: value for name, value in values.items() if value != specs[name].default} == {}


def test_tracker_parameters_build_the_tracker_settings_and_refuse_an_inverted_score_band():
    from seg_models.configs import TrackerSettings
    from seg_perception.nodes.instance_segmentation import tracker_settings_from_parameters
    from seg_perception.runtime.parameters import ParameterValueError

    values = {name: spec.default for name, spec in declared(INSTANCE_NODE).items()}
    assert tracker_settings_from_parameters(values) == TrackerSettings()
    with pytest.raises(ParameterValueError, match='track_low_score 0.7 is above track_high_score 0.6'):
        tracker_settings_from_parameters({**values, 'track_low_score': 0.7})
