"""Where the shared driving data lies (../shared/data beside the checkout, or
$SEG_PERCEPTION_SHARED_DATA, e.g. a copy carried to a GPU machine); ROS-free, so GPU-only test
runs can import it."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get('SEG_PERCEPTION_SHARED_DATA') or REPO_ROOT.parent / 'shared' / 'data')
CAMVID_IMAGES = SHARED_DATA / 'camvid_seq05vd' / 'images'
