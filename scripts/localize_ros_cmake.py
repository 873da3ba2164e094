"""Point the ROS 2 wheels' CMake exports at this venv's own Python headers and numpy.

The ros-kilted wheels are built on a manylinux machine, and their ``*_rosidl_generator_pyExport.cmake``
files name that machine's paths (``/opt/python/cp311-cp311/...``). Rewriting them inside the venv,
once per install, keeps everything a colcon build needs within the clone; links under /opt would be
shared by every clone on the machine and re-pointed by the last one bootstrapped.

    python scripts/localize_ros_cmake.py VENV
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

BUILD_MACHINE_PYTHON = '/opt/python/cp311-cp311/include/python3.11'
BUILD_MACHINE_NUMPY = '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include'


def replacements(venv: Path) -> dict[str, str]:
    """The build machine's paths -> this venv's."""
    site = Path(sysconfig.get_paths(vars={'base': str(venv), 'platbase': str(venv)})['purelib'])
    return {BUILD_MACHINE_PYTHON: sysconfig.get_paths()['include'],
            BUILD_MACHINE_NUMPY: str(site / 'numpy' / '_core' / 'include')}


def localize(venv: Path) -> list[Path]:
    """Rewrite every CMake file under ``venv/share`` naming the build machine's paths; returns them."""
    changed = []
    for path in sorted((venv / 'share').glob('*/cmake/*.cmake')):
        text = path.read_text()
        new = text
        for old, local in replacements(venv).items():
            new = new.replace(old, local)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == '__main__':
    localized = localize(Path(sys.argv[1]).resolve())
    if localized:
        print(f'[bootstrap]     {len(localized)} ROS CMake exports now name this venv\'s Python and numpy headers',
              file=sys.stderr)
