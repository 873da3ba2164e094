"""Topic names and QoS profiles shared by nodes, the runner, launch files and tests.

Names are relative, so a node pushed into a namespace (one per camera) publishes under it;
in the root namespace they resolve to /segmentation/....
"""
from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

CAMERA_INPUT = 'image'  # image_transport-style input name; launch remaps it to the camera topic
COMPRESSED_SUFFIX = '/compressed'  # image_transport's compressed transport: <image topic>/compressed
SEMANTIC_OUTPUT = 'segmentation/semantic'
CONFIDENCE_OUTPUT = 'segmentation/semantic/confidence'
INSTANCE_OUTPUT = 'segmentation/instances'
COLOR_OUTPUT = '~/color'
OVERLAY_OUTPUT = '~/overlay'
PROCESSING_TIME_OUTPUT = '~/processing_time'

RELIABILITY_CHOICES = ('best_effort', 'reliable')
TRANSPORT_CHOICES = ('raw', 'compressed')


def input_qos(reliability: str) -> QoSProfile:
    """Camera subscription: keep only the newest frame, so a slow model never builds a backlog.

    best_effort is the sensor-data convention for live cameras; reliable suits bag replay.
    """
    policy = ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort' else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=policy)


# Outputs are reliable: they match best-effort and reliable subscribers alike.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
