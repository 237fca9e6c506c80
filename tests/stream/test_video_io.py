"""Decode and encode through PyAV: every frame, the same timestamps, the audio."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest

from tests.conftest import lossless_clip, shared_data
from veil.stream.anonymisers.classic import cover_whole_frame
from veil.stream.graph import Graph
from veil.stream.io.sink import VideoFileSink
from veil.stream.io.source import VideoSource
from veil.testing.clips import make_example_clip


def copy_through_graph(src, dst):
    source = VideoSource(str(src))
    frames = list(source)
    sink = VideoFileSink(dst, width=frames[0].width, height=frames[0].height, rate=source.rate, time_base=source.time_base, audio=source.audio)
    Graph(iter(frames), [], sink, cover=cover_whole_frame).run()
    sink.commit()
    source.close()
    return frames


def packet_times(path, kind):
    """Sorted presentation times (s) of the packets of the first stream of ``kind``."""
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return sorted(float(p.pts * p.time_base) for p in container.demux(stream) if p.pts is not None)


def test_video_timestamps_frame_count_and_audio_are_preserved(example_clip, tmp_path):
    clip, truth = example_clip
    out = tmp_path / "copy.mp4"
    copy_through_graph(clip, out)
    assert packet_times(out, "video") == pytest.approx(packet_times(clip, "video"), abs=1e-4)
    assert len(packet_times(out, "video")) == len(truth)
    assert packet_times(out, "audio") == pytest.approx(packet_times(clip, "audio"), abs=1e-4)
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (640, 360)
        assert video.average_rate == 25


def test_variable_frame_rate_is_kept(tmp_path):
    clip, out = tmp_path / "vfr.mkv", tmp_path / "vfr_out.mkv"
    gaps = [1, 1, 3, 1, 2, 5, 1, 1, 4, 1] * 3
    pts = list(np.cumsum([0] + gaps[:-1]) * 40)  # in 1/1000 s: 40 ms, 120 ms, 200 ms...
    make_example_clip(clip, width=320, height=180, fps=25, seconds=len(pts) / 25, frame_pts=pts, time_base=Fraction(1, 1000), audio=False)
    copy_through_graph(clip, out)
    assert packet_times(out, "video") == pytest.approx([p / 1000 for p in pts], abs=1e-3)


def test_odd_frame_sizes_keep_every_pixel(tmp_path):
    src = lossless_clip(tmp_path / "odd.mkv", [np.full((179, 321, 3), 40 * i, np.uint8) for i in range(5)])
    out = tmp_path / "odd_out.mp4"
    frames = copy_through_graph(src, out)
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) == len(frames) == 5
    assert decoded[0].shape == (179, 321, 3)
    assert np.abs(decoded[3].astype(int) - 120).mean() < 3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to tag a rotated file (.ci/run installs it)")
def test_rotation_metadata_is_applied_as_ffmpeg_shows_it(example_clip, tmp_path):
    clip, _ = example_clip
    rotated = tmp_path / "rotated.mp4"
    # FFmpeg 6+ spells the tag -display_rotation; older FFmpeg takes a "rotate" tag.
    tagged = subprocess.run(["ffmpeg", "-v", "error", "-display_rotation", "90", "-i", str(clip), "-c", "copy", str(rotated)])
    if tagged.returncode != 0:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated)], check=True)
    source = VideoSource(str(rotated))
    ours = next(iter(source)).image
    source.close()
    # What a player shows: FFmpeg's own autorotated decode of the same frame.
    shown = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
        capture_output=True, check=True,
    ).stdout
    assert ours.shape == (640, 360, 3)
    shown = np.frombuffer(shown, np.uint8).reshape(ours.shape)
    assert np.abs(ours.astype(int) - shown.astype(int)).mean() < 3


@pytest.mark.parametrize("name", ["stage_audience_360p.mp4", "crowd_arcade_1080p.mp4"])
def test_real_clip_keeps_its_timing_and_audio_offset_exactly(name, tmp_path):
    # stage_audience starts its video 0.85 s after its audio (29.97 fps): the offset is sync.
    clip = shared_data("video", name)
    out = tmp_path / name
    copy_through_graph(clip, out)
    assert packet_times(out, "video") == pytest.approx(packet_times(clip, "video"), abs=1e-6)
    assert packet_times(out, "audio") == pytest.approx(packet_times(clip, "audio"), abs=1e-6)
