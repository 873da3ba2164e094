"""seg_perception: ROS 2 nodes that run seg_models' networks on camera images.

Nodes stay thin: message <-> array conversion, parameters and publishing live here; everything
about networks lives in ``seg_models``.
"""
