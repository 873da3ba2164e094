"""Which Fast DDS profile a process uses, so that camera-sized messages arrive best-effort.

Fast DDS's default shared-memory segment (512 KiB) cannot carry a best-effort image above ~0.5 MB
(docs/cameras_and_dds.md, "Large images over DDS"). The package installs two profiles with 64 MiB segments under
``share/seg_perception/config/``:

* ``fastdds_large_images.xml``: Fast DDS's usual transports (UDP on every interface, shared
  memory) with the bigger segments; every node executable (``run_node``: the segmentation nodes
  under ``ros2 launch`` or ``ros2 run``, ``image_source``) uses it;
* ``fastdds_localhost.xml``: shared memory and loopback UDP only; the tools that start their own
  nodes on this machine (``run_pipeline``, ``seg_bag``, the benchmarks) use it, for themselves and
  the nodes they start.

A profile the user exported in ``FASTDDS_DEFAULT_PROFILES_FILE`` always wins, and nothing is set
when ``RMW_IMPLEMENTATION`` names another middleware. It has to be in the environment before the
process's first DDS participant exists (``rclpy.init`` and the first node).
"""
from __future__ import annotations

from typing import MutableMapping

from seg_perception.package_share import data_path

PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
LARGE_IMAGES_PROFILE = 'config/fastdds_large_images.xml'
LOCALHOST_PROFILE = 'config/fastdds_localhost.xml'
FAST_DDS_RMWS = ('rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp')
DEFAULT_RMW = 'rmw_fastrtps_cpp'  # what rmw_implementation loads when RMW_IMPLEMENTATION is unset


def use_large_images_profile(environ: MutableMapping[str, str], profile: str = LARGE_IMAGES_PROFILE) -> str:
    """Point ``environ`` (os.environ, or a child process's copy) at the installed ``profile`` unless a
    profile is already set or Fast DDS is not the RMW; returns the profile in effect ('' for none)."""
    if environ.get(PROFILE_VARIABLE):
        return environ[PROFILE_VARIABLE]
    if (environ.get('RMW_IMPLEMENTATION') or DEFAULT_RMW) not in FAST_DDS_RMWS:
        return ''
    environ[PROFILE_VARIABLE] = str(data_path(profile))
    return environ[PROFILE_VARIABLE]
