"""Test set-up: DDS kept on this machine, on a domain of this test run's own."""
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DIR = Path(__file__).resolve().parent

# Before anything initialises rclpy: node processes the tests start inherit these.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(TEST_DIR / 'fastdds_localhost.xml')
# Test the source tree, also in node processes started by tests.
os.environ['PYTHONPATH'] = os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')])
sys.path.insert(0, str(REPO_ROOT))
