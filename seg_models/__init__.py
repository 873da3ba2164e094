"""seg_models: segmentation networks, checkpoints, export and inference backends.

This package never imports ROS: everything here runs the same in a node, in a batch evaluation
job or in a notebook. The ROS nodes in ``seg_perception`` are thin wrappers around it.
"""
