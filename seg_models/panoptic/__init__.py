"""Panoptic scenes: one frame's semantic and instance results fused into non-overlapping segments
(Panoptic FPN's combination, fusion.py), so consumers get every pixel's class and object from one answer."""
