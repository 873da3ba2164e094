"""Checks that keep the house in order, as ament's test_flake8.py / test_pep257.py do for a ROS package:
the code passes ruff (pycodestyle, pyflakes, lines of 120 at most, a docstring on every public module,
see ruff.toml), and seg_models stays free of ROS."""
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--output-format', 'concise', '.'],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_every_seg_models_module_never_loads_rclpy():
    """seg_models runs without ROS (batch jobs, the GPU machine): a fresh interpreter imports each of
    its modules and no ROS 2 client library or message package may come along."""
    script = (
        'import importlib, pkgutil, sys\n'
        'import seg_models\n'
        'names = [m.name for m in pkgutil.walk_packages(seg_models.__path__, "seg_models.")\n'
        '         if not m.name.endswith("__main__")]\n'
        'for name in names:\n'
        '    importlib.import_module(name)\n'
        'ros = sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "rosidl_parser", "sensor_msgs",\n'
        '                                                           "std_msgs", "seg_perception_msgs"))\n'
        'print(len(names), ros)\n')
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(' ', 1)
    assert int(count) >= 20, result.stdout  # every module was imported, not a part of the package
    assert loaded.strip() == '[]', f'seg_models pulled in ROS modules: {loaded}'
