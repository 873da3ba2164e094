"""``seg_bag evaluate-fleet``: bags on real (local) Ray workers, merged exactly, faults survived,
results cached per bag."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import CAMVID_IMAGES, REPO_ROOT
from seg_perception.evaluation.fleet import KILL_ONCE_ENV, fleet_bags

pytestmark = pytest.mark.slow
needs_camvid = pytest.mark.skipif(not CAMVID_IMAGES.is_dir(), reason=f'needs the CamVid frames in {CAMVID_IMAGES}')
MODEL = ('--input-size', '64', '128', '--label-set', 'camvid', '--backend', 'pytorch', '--workers', '2')


def seg_bag(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'seg_perception.evaluation', *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


@pytest.fixture(scope='module')
def drives(tmp_path_factory) -> Path:
    """Three small CamVid bags and one that cannot be read, in one folder."""
    root = tmp_path_factory.mktemp('drives')
    for index in range(3):
        made = seg_bag('make', CAMVID_IMAGES.parent, root / f'drive_{index}.bag', '--max-frames', 2 + index)
        assert made.returncode == 0, made.stderr
    (root / 'broken.bag').mkdir()
    (root / 'broken.bag' / 'metadata.yaml').write_text('rosbag2_bagfile_information: [')
    return root


def test_bags_are_found_in_folders_globs_and_lists(tmp_path, drives):
    listed = tmp_path / 'bags.txt'
    listed.write_text(f'# two of them\n{drives / "drive_0.bag"}\n{drives / "drive_1.bag"}\n')
    assert fleet_bags([str(drives)]) == sorted(drives.iterdir())
    assert fleet_bags([str(drives / 'drive_*.bag'), f'@{listed}']) == [drives / f'drive_{i}.bag' for i in range(3)]


@needs_camvid
def test_a_fleet_is_merged_exactly_survives_a_dead_worker_and_a_broken_bag_and_resumes(tmp_path, drives):
    report = tmp_path / 'report'
    first = seg_bag('evaluate-fleet', drives / 'drive_0.bag', drives / 'drive_1.bag', drives / 'broken.bag', report,
                    *MODEL, env={KILL_ONCE_ENV: str(tmp_path / 'killed')})
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / 'killed').exists(), 'a worker died mid-fleet'
    assert '2 bags evaluated (0 from the cache), 1 not; 5 frames' in first.stdout
    results = json.loads((report / 'report.json').read_text())
    assert [row['frames'] for row in results['bags']] == [2, 3]  # the dead worker's bag counted once
    assert results['errors'][0]['bag'].endswith('broken.bag') and 'metadata.yaml' in results['errors'][0]['error']
    overall = np.array(results['overall']['confusion'])
    np.testing.assert_array_equal(overall, sum(np.array(row['confusion']) for row in results['bags']))
    assert overall.sum() > 0 and results['overall']['frames'] == 5
    assert results['cameras']['/camera/image_raw']['confusion'] == results['overall']['confusion']

    second = seg_bag('evaluate-fleet', drives / 'drive_0.bag', drives / 'drive_1.bag', drives / 'drive_2.bag', report,
                     *MODEL)
    assert second.returncode == 0, second.stdout + second.stderr
    assert '3 bags evaluated (2 from the cache), 0 not; 9 frames' in second.stdout
    resumed = json.loads((report / 'report.json').read_text())
    assert [row['cached'] for row in resumed['bags']] == [True, True, False]
    assert resumed['bags'][0]['confusion'] == results['bags'][0]['confusion']
    assert '| drive_2.bag | 4 |' in (report / 'report.md').read_text().replace(str(drives) + '/', '')
