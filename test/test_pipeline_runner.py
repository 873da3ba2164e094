"""The no-launch runner (README's main job) runs the pipeline nodes and leaves correct outputs."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from ros_helpers import REPO_ROOT
from seg_models.data.frame_sources import synthetic_frames
from seg_models.data.labels import cityscapes
from seg_perception.bringup.processes import NodeProcesses, spin_until
from seg_perception.bringup.runner import OutputCollector, _wait, runner_cameras
from seg_perception.messages.topics import CAMERA_INPUT, DIAGNOSTICS, DIAGNOSTICS_QOS

pytestmark = pytest.mark.ros


def test_runner_segments_every_frame_and_writes_labels_colour_and_panoptic_views(tmp_path):
    frames_dir = tmp_path / 'frames'
    frames_dir.mkdir()
    for frame in synthetic_frames(3, width=320, height=180):
        cv2.imwrite(str(frames_dir / f'{frame.name}.png'), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    output = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, '-m', 'seg_perception.bringup.runner', '--source', str(frames_dir), '--output', str(output),
         '-p', 'input_height:=64', '-p', 'input_width:=128', '--panoptic'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'UNTRAINED' in result.stdout + result.stderr  # said loudly without a checkpoint
    palette = cityscapes().palette()
    names = sorted(path.stem for path in frames_dir.iterdir())
    assert sorted(path.stem for path in (output / 'labels').iterdir()) == names
    for name in names:
        labels = cv2.imread(str(output / 'labels' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        color = cv2.cvtColor(cv2.imread(str(output / 'color' / f'{name}.png')), cv2.COLOR_BGR2RGB)
        assert labels.shape == (180, 320) and labels.dtype == np.uint8 and labels.max() < 19
        np.testing.assert_array_equal(color, palette[labels])
    assert '3 frames segmented from 1 camera' in result.stdout
    overlays = sorted((output / 'instances').iterdir())
    assert [path.stem for path in overlays] == names
    assert all(cv2.imread(str(path)).shape == (180, 320, 3) for path in overlays)
    panoptic = sorted((output / 'panoptic').iterdir())  # --panoptic: the fusion node's colour view too
    assert [path.stem for path in panoptic] == names and 'panoptic/' in result.stdout
    assert all(cv2.imread(str(path)).shape == (180, 320, 3) for path in panoptic)


def test_runner_serves_two_cameras_from_the_config_file(tmp_path):
    """cameras in the parameter file: one node per task serves both; each camera has its own source
    (different sizes) and its outputs in its own folder, at its own size."""
    config = yaml.safe_load((REPO_ROOT / 'config' / 'driving.yaml').read_text())
    for section in config.values():
        section['ros__parameters'].update(cameras=['/front/image_raw', '/rear/image_raw'], max_batch=2,
                                          input_height=64, input_width=128)
    config_file = tmp_path / 'two_cameras.yaml'
    config_file.write_text(yaml.safe_dump(config))
    sources = {'front': (180, 320), 'rear': (128, 256)}
    for camera, (height, width) in sources.items():
        (tmp_path / camera).mkdir()
        for frame in synthetic_frames(2, width=width, height=height):
            cv2.imwrite(str(tmp_path / camera / f'{frame.name}.png'), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    output = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, '-m', 'seg_perception.bringup.runner', '--config', str(config_file), '--output', str(output),
         '--source', str(tmp_path / 'front'), '--source', str(tmp_path / 'rear')],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '2 frames segmented from 2 cameras' in result.stdout
    for camera, size in sources.items():
        for folder in ('labels', 'color', 'overlay', 'instances'):
            images = sorted((output / camera / folder).iterdir())
            assert len(images) == 2, f'{camera}/{folder}: {images}'
            assert all(cv2.imread(str(path)).shape[:2] == size for path in images)


def test_runner_reports_a_missing_source_clearly(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'seg_perception.bringup.runner', '--source',
                             str(tmp_path / 'absent'), '--output', str(tmp_path / 'out')],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'is neither a folder, a video file nor "synthetic"' in result.stderr


def test_a_wait_that_times_out_names_what_the_nodes_report_as_errors(tmp_path):
    """A pipeline that never answers (the panoptic node with label sets it cannot fuse) ends in a
    line naming the error its /diagnostics reports, not only 'no output'; an error gone is not named."""
    problem = 'cannot fuse: camvid has no thing class person'
    rclpy.init()
    try:
        collector = OutputCollector(runner_cameras([CAMERA_INPUT], '/runner_wait/image', tmp_path), panoptic=True)
        reporter = rclpy.create_node('runner_wait_reporter')
        publisher = reporter.create_publisher(DiagnosticArray, DIAGNOSTICS, DIAGNOSTICS_QOS)

        def report(level: int, message: str) -> None:
            publisher.publish(DiagnosticArray(status=[
                DiagnosticStatus(level=level, name='panoptic_segmentation: camera pipeline', message=message),
                DiagnosticStatus(level=DiagnosticStatus.OK, name='semantic_segmentation: inference', message='ok')]))

        def reported(condition) -> bool:
            return spin_until(collector, condition, 10.0, check=lambda: rclpy.spin_once(reporter, timeout_sec=0))

        report(DiagnosticStatus.ERROR, problem)
        assert reported(lambda: collector.errors or report(DiagnosticStatus.ERROR, problem))
        with NodeProcesses([]) as processes:
            with pytest.raises(TimeoutError) as timed_out:
                _wait(collector, processes, lambda: False, 0.5, 'output for frame f000')
            assert str(timed_out.value) == (f'no output for frame f000 within 0 s (/diagnostics: '
                                            f'panoptic_segmentation: camera pipeline: {problem})')
            assert reported(lambda: not collector.errors or report(DiagnosticStatus.OK, 'fusing'))
            with pytest.raises(TimeoutError) as timed_out:
                _wait(collector, processes, lambda: False, 0.5, 'output for frame f000')
            assert str(timed_out.value) == 'no output for frame f000 within 0 s'
        reporter.destroy_node()
        collector.destroy_node()
    finally:
        rclpy.try_shutdown()
