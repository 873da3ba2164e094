"""Driving perception pipeline: ``ros2 launch seg_perception driving.launch.py``.

Arguments:
  camera_topic         sensor_msgs/Image topic of the camera (default /camera/image_raw)
  cameras              several cameras served by each node, e.g. "[/front/image_raw, /rear/image_raw]";
                       each camera's outputs go to its namespace (/front/segmentation/semantic, ...);
                       empty keeps the params file's list ([image]: the one camera on camera_topic)
  params_file          parameter file (default: the installed config/driving.yaml)
  semantic_checkpoint  weights for the semantic node; empty keeps the params file's value
  instance_checkpoint  weights for the instance node; empty keeps the params file's value
  use_sim_time         true when replaying bags with /clock
  panoptic             true: also start panoptic_segmentation, which fuses both nodes' results of each
                       frame into segmentation/panoptic (default false)
The nodes come from seg_perception.bringup.driving_pipeline, which the no-ROS-install runner reads
too. They configure and activate themselves (parameter autostart, true in config/driving.yaml),
and use the installed Fast DDS profile config/fastdds_large_images.xml (64 MiB shared-memory
segments: camera-sized frames arrive best-effort) unless FASTDDS_DEFAULT_PROFILES_FILE is set
(seg_perception.messages.dds_profile). Ctrl-C stops every node with exit code 0.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from seg_perception.bringup.driving_pipeline import (CONFIG_PATH, DEFAULT_CAMERA_TOPIC, DRIVING_PIPELINE, PACKAGE,
                                                     PANOPTIC_FUSION, camera_list)


def _pipeline_nodes(context):
    use_sim_time = LaunchConfiguration('use_sim_time').perform(context).lower() in ('true', '1', 'yes')
    cameras = camera_list(LaunchConfiguration('cameras').perform(context))
    panoptic = LaunchConfiguration('panoptic').perform(context).lower() in ('true', '1', 'yes')
    nodes = []
    for pipeline_node in DRIVING_PIPELINE + ((PANOPTIC_FUSION,) if panoptic else ()):
        overrides = {'use_sim_time': use_sim_time}
        if cameras:
            overrides['cameras'] = cameras
        if pipeline_node in DRIVING_PIPELINE:
            checkpoint = LaunchConfiguration(pipeline_node.checkpoint_argument).perform(context)
            if checkpoint:
                overrides['checkpoint'] = checkpoint
        nodes.append(Node(
            package=PACKAGE,
            executable=pipeline_node.executable,
            name=pipeline_node.name,
            output='screen',
            emulate_tty=True,
            parameters=[LaunchConfiguration('params_file'), overrides],
            remappings=[(pipeline_node.camera_input, LaunchConfiguration('camera_topic'))],
        ))
    return nodes


def generate_launch_description():
    default_params_file = os.path.join(get_package_share_directory(PACKAGE), CONFIG_PATH)
    arguments = [
        DeclareLaunchArgument('camera_topic', default_value=DEFAULT_CAMERA_TOPIC,
                              description='sensor_msgs/Image topic of the camera'),
        DeclareLaunchArgument('cameras', default_value='',
                              description='camera image topics served by each node, e.g. '
                                          '"[/front/image_raw, /rear/image_raw]"; empty: the params file\'s list'),
        DeclareLaunchArgument('params_file', default_value=default_params_file,
                              description='ROS 2 parameter file for the pipeline nodes'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (bag replay) instead of the system clock'),
        DeclareLaunchArgument('panoptic', default_value='false',
                              description='also start panoptic_segmentation (segmentation/panoptic: both nodes\' '
                                          'results of each frame as one scene)'),
    ]
    arguments += [
        DeclareLaunchArgument(pipeline_node.checkpoint_argument, default_value='',
                              description=f'weights for {pipeline_node.name}; empty keeps the params file value')
        for pipeline_node in DRIVING_PIPELINE
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_pipeline_nodes)])
