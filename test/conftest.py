"""Test set-up: DDS kept on this machine (on $ROS_DOMAIN_ID, else a domain of the run's own), an engine
cache of the run's own; ``gpu`` tests skipped where no CUDA device is visible; a watchdog for hung
tests; the model files shared by a test run.

Helpers the tests import live beside this file: ros_helpers.py (node processes, the camera probe),
model_files.py (checkpoints), fitted_models.py (networks fitted to CamVid), shared_data.py."""
import faulthandler
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Before anything initialises rclpy: node processes the tests start inherit these. The user's
# ROS_DOMAIN_ID is kept when set; otherwise the run takes one of its own, so parallel runs do not meet.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(REPO_ROOT / 'config' / 'fastdds_localhost.xml')
# Exported ONNX files and engines of this run stay out of the user's cache, and go at the end of the run.
TEST_CACHE_DIR = tempfile.mkdtemp(prefix='seg_models_test_cache_')
os.environ['SEG_MODELS_CACHE_DIR'] = TEST_CACHE_DIR
# A semantic network without a checkpoint is untrained in tests (the shipped demo model has its own tests).
os.environ.setdefault('SEG_MODELS_DEMO_MODEL', '')

# Test the source tree, also in node processes started by tests.
os.environ['PYTHONPATH'] = os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')])
sys.path.insert(0, str(REPO_ROOT))


def pytest_sessionfinish(session, exitstatus):
    """Nothing of the run stays behind: its engine cache goes (pytest.ini bounds pytest's own folders)."""
    shutil.rmtree(TEST_CACHE_DIR, ignore_errors=True)


# One checkpoint of each kind per test run (test/model_files.py), shared by every test that needs that
# kind: the ONNX export of a checkpoint (a minute for Mask R-CNN on a 2-core runner) is then made once, in
# the run's cache above, and reused by every segmenter and node process with the same graph settings.

@pytest.fixture(scope='session')
def deeplabv3plus_checkpoint(tmp_path_factory) -> Path:
    """DeepLabv3+ MobileNetV3-Large, Cityscapes' 19 classes, random weights (seed 7)."""
    from model_files import deeplabv3plus_checkpoint

    return deeplabv3plus_checkpoint(tmp_path_factory.mktemp('weights') / 'deeplabv3plus_mobilenet.pth',
                                    backbone='mobilenet_v3_large', seed=7)


@pytest.fixture(scope='session')
def deeplabv3plus_resnet50_checkpoint(tmp_path_factory) -> Path:
    """DeepLabv3+ ResNet-50, Cityscapes' 19 classes, random weights (seed 21): the TensorRT tests' network."""
    from model_files import deeplabv3plus_checkpoint

    return deeplabv3plus_checkpoint(tmp_path_factory.mktemp('weights') / 'deeplabv3plus_resnet50.pth',
                                    backbone='resnet50', seed=21)


@pytest.fixture(scope='session')
def maskrcnn_checkpoint(tmp_path_factory) -> Path:
    """Mask R-CNN R50-FPN, cityscapes_things classes, random weights (seed 2): on the driving frames it
    finds many overlapping instances, all scoring below 1, and its boxes through our graph stay within
    1e-3 px of torchvision's own forward (test_instance_segmenter; some seeds land just outside)."""
    from model_files import maskrcnn_checkpoint

    return maskrcnn_checkpoint(tmp_path_factory.mktemp('weights') / 'maskrcnn_cityscapes_things.pth', seed=2)


# The longest any one test runs on a 2-core runner is a few minutes. A test still running after this
# is hung (Fast DDS 3.2 can deadlock while endpoints come and go: eProsima/Fast-DDS#6502): dump every
# thread's stack and end the run, instead of waiting for CI's limit with no word on where.
HUNG_TEST_SEC = 1200


def pytest_runtest_setup(item):
    """A test marked ``gpu`` (pytest.ini) needs a CUDA device: skipped, with the reason, where none is visible."""
    if item.get_closest_marker('gpu') is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip('needs a CUDA device (none visible here); docs/backends_and_gpu.md "The GPU path" says '
                        'how these run')


@pytest.fixture(autouse=True)
def hung_test_watchdog():
    faulthandler.dump_traceback_later(HUNG_TEST_SEC, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# Networks fitted to ../shared's CamVid frames (test/fitted_models.py), once per test run: the
# precision and device-pipeline checks need realistic activations. On a CUDA machine they train there.

@pytest.fixture(scope='session')
def camvid_frames_full():
    from fitted_models import camvid_frames

    return [image for image, _ in camvid_frames(size=(360, 480))]


@pytest.fixture(scope='session')
def fitted_semantic(tmp_path_factory):
    from fitted_models import fit_deeplabv3plus, fit_device

    return fit_deeplabv3plus(tmp_path_factory.mktemp('fitted') / 'deeplabv3plus_camvid.pth', device=fit_device())


@pytest.fixture(scope='session')
def fitted_instance(tmp_path_factory):
    from fitted_models import fit_device, fit_mask_rcnn

    return fit_mask_rcnn(tmp_path_factory.mktemp('fitted') / 'maskrcnn_camvid.pth', device=fit_device())
