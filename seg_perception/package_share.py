"""Where the package's data files are: the source tree when run from a checkout, else the install.

The parameter file (``config/driving.yaml``), the DDS profiles and the interface package's
``.msg`` files are looked up here, the one way: the checkout first, then the
package's share folder (through ``ament_index_python`` where it is installed, else the
``AMENT_PREFIX_PATH`` entries it would read).
"""
from __future__ import annotations

import os
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the repository root in a checkout
PACKAGE = 'seg_perception'
INTERFACE_PACKAGE = 'seg_perception_msgs'
# Where each package's files are in a checkout: seg_perception at the root, the interfaces inside it.
SOURCE_FOLDERS = {PACKAGE: SOURCE_ROOT, INTERFACE_PACKAGE: SOURCE_ROOT / INTERFACE_PACKAGE}


def _installed_share_dirs(package: str) -> list[Path]:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        prefixes = [Path(prefix) for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if prefix]
        return [prefix / 'share' / package for prefix in prefixes]
    try:
        return [Path(get_package_share_directory(package))]
    except (PackageNotFoundError, ValueError):
        return []


def data_paths(relative: str, package: str = PACKAGE) -> list[Path]:
    """Existing copies of ``relative`` (e.g. 'config/label_sets'), the checkout's first."""
    candidates = [SOURCE_FOLDERS[package] / relative] + [share / relative for share in _installed_share_dirs(package)]
    return [path for path in candidates if path.exists()]


def data_path(relative: str, package: str = PACKAGE) -> Path:
    """The first copy of ``relative``; FileNotFoundError names where it was looked for."""
    found = data_paths(relative, package)
    if not found:
        raise FileNotFoundError(f'{relative} of {package} is neither in the source tree {SOURCE_FOLDERS[package]} nor '
                                f'in an installed share folder (source the install tree)')
    return found[0]
