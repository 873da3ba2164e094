"""seg_models.data.frame_sources: image folders, videos and generated frames as frame sequences."""
import cv2
import numpy as np
import pytest

from seg_models.data.frame_sources import open_frames, synthetic_frames


def test_frame_sources_read_folders_videos_and_generate_frames(tmp_path):
    generated = list(synthetic_frames(4, width=64, height=48))
    assert [f.rgb.shape for f in generated] == [(48, 64, 3)] * 4
    assert not np.array_equal(generated[0].rgb, generated[1].rgb)  # the cars move
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for frame in generated:
        writer.write(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    from_video = list(open_frames(str(video)))
    assert [f.name for f in from_video] == [f'frame_{i:06d}' for i in range(4)]
    assert len(list(open_frames(str(video), max_frames=2))) == 2
    assert len(list(open_frames('synthetic', max_frames=5))) == 5


def test_a_source_that_is_not_there_is_refused_when_opened_not_at_its_first_frame(tmp_path):
    """The runner and the image source node check their sources before they start anything."""
    with pytest.raises(FileNotFoundError, match='is neither a folder, a video file nor "synthetic"'):
        open_frames(str(tmp_path / 'absent'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no images'):
        open_frames(str(tmp_path / 'empty'))
    (tmp_path / 'clip.mp4').write_bytes(b'not a video')
    with pytest.raises(ValueError, match='cannot open video'):
        open_frames(str(tmp_path / 'clip.mp4'))
