"""ament_python package seg_perception: ROS 2 nodes (seg_perception) and networks (seg_models)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = 'seg_perception'

setup(
    name=PACKAGE_NAME,
    version='0.1.0',
    packages=find_packages(include=['seg_perception', 'seg_perception.*', 'seg_models', 'seg_models.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE_NAME]),
        ('share/' + PACKAGE_NAME, ['package.xml']),
        ('share/' + PACKAGE_NAME + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE_NAME + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    package_data={'seg_models.data': ['label_sets/*.yaml', 'weights/*.safetensors', 'weights/*.md']},
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='seg_perception maintainers',
    maintainer_email='maintainers@seg-perception.dev',
    description='Semantic and instance segmentation nodes for driving scenes.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'semantic_node = seg_perception.nodes.semantic_segmentation:SemanticSegmentationNode.main',
            'semantic_lifecycle_node = seg_perception.nodes.semantic_segmentation:SemanticSegmentationNode'
            '.main_unconfigured',
            'instance_node = seg_perception.nodes.instance_segmentation:InstanceSegmentationNode.main',
            'instance_lifecycle_node = seg_perception.nodes.instance_segmentation:InstanceSegmentationNode'
            '.main_unconfigured',
            'panoptic_node = seg_perception.nodes.panoptic_segmentation:PanopticSegmentationNode.main',
            'instance_listener = seg_perception.nodes.instance_listener:main',
            'image_source = seg_perception.nodes.image_source:main',
            'run_pipeline = seg_perception.bringup.runner:main',
            'seg_bag = seg_perception.evaluation.cli:main',
            'seg-models = seg_models.cli:main',
        ],
    },
)
