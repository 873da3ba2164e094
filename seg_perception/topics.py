"""Topic names and QoS profiles shared by nodes, the runner, launch files and tests.

Names are relative, so a node pushed into a namespace (one per camera) publishes under it;
in the root namespace they resolve to /segmentation/....
"""
from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

CAMERA_INPUT = 'image'  # image_transport-style input name; launch remaps it to the camera topic
SEMANTIC_OUTPUT = 'segmentation/semantic'
COLOR_OUTPUT = '~/color'

RELIABILITY_CHOICES = ('best_effort', 'reliable')


def input_qos(reliability: str) -> QoSProfile:
    """Camera subscription: keep only the newest frame, so a slow model never builds a backlog.

    best_effort is the sensor-data convention for live cameras; reliable suits bag replay.
    """
    policy = ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort' else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=policy)


# Outputs are reliable: they match best-effort and reliable subscribers alike.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
