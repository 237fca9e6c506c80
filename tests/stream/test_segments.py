"""Recordings in segments: each file finished and named when full, named by camera and UTC
start, none left under a partial name, old ones removed by age and by size."""

from __future__ import annotations

import os
import re
import time

import av
import numpy as np
import pytest

from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.io.live import CLOCK
from veil.stream.io.provenance import tags_of
from veil.stream.io.segments import Recording, SegmentedRecorder, SegmentPlan, SegmentSeals
from veil.stream.options import Options
from veil.stream.recovery.keys import generate, load_private
from veil.stream.recovery.restore import open_for
from veil.stream.recovery.sidecar import sidecar_path
from veil.stream.stages.seal import SealStage

FPS = 10


def frames(count: int, start: int = 0):
    rng = np.random.default_rng(0)
    for index in range(start, start + count):
        image = rng.integers(0, 255, (96, 128, 3), np.uint8)  # noise: every segment costs about the same
        yield Frame(image=image, pts=round(index / FPS / CLOCK), time_base=CLOCK, index=index, captured=time.monotonic())


def recorder(folder, camera="gate", **settings) -> SegmentedRecorder:
    return SegmentedRecorder(camera, Recording(folder, **settings), width=128, height=96, rate=FPS, time_base=CLOCK, audio=False)


def frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_recording_is_cut_into_finished_segments_named_by_camera_and_utc_start(tmp_path):
    sink = recorder(tmp_path, segment_s=2.0)
    for frame in frames(50):
        sink.write(frame)
    sink.close()
    sink.commit()
    assert [frame_count(path) for path in sink.finished] == [20, 20, 10]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in sink.finished)  # nothing partial is left
    for path in sink.finished:
        assert re.fullmatch(r"gate-\d{8}T\d{6}Z(-\d+)?\.mkv", path.name), path.name


def test_only_finished_segments_carry_a_real_name_while_recording(tmp_path):
    sink = recorder(tmp_path, segment_s=2.0, format="mp4")
    for frame in frames(25):
        sink.write(frame)
    named = [p for p in tmp_path.iterdir() if ".partial" not in p.name]
    assert named == sink.finished and frame_count(named[0]) == 20  # the first is complete and playable
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == [sink.partial.name]
    sink.close()
    sink.abort()
    assert sorted(tmp_path.iterdir()) == named


def test_segments_past_the_size_budget_go_oldest_first(tmp_path):
    probe = recorder(tmp_path / "probe", segment_s=1.0)
    for frame in frames(11):
        probe.write(frame)
    probe.close()
    probe.commit()
    one = probe.finished[0].stat().st_size
    sink = recorder(tmp_path / "site", segment_s=1.0, keep_bytes=int(one * 2.5))
    for frame in frames(60):
        sink.write(frame)
    sink.close()
    sink.commit()
    left = sorted((tmp_path / "site").iterdir(), key=os.path.getmtime)
    assert 2 <= len(left) <= 3 and left == sink.finished[-len(left):]  # the newest are kept
    assert sum(p.stat().st_size for p in left[:-1]) <= one * 2.5


@pytest.mark.parametrize("other", ["gate-2-20200101T000000Z.mkv", "notes.txt"])
def test_segments_older_than_keep_days_go_and_nothing_else_does(tmp_path, other):
    old = tmp_path / "gate-20200101T000000Z.mkv"
    for path in (old, tmp_path / other):
        path.write_bytes(b"old")
        os.utime(path, (time.time() - 3 * 86400,) * 2)
    sink = recorder(tmp_path, segment_s=1.0, keep_days=2)
    for frame in frames(15):
        sink.write(frame)
    sink.close()
    sink.commit()
    assert not old.exists() and (tmp_path / other).exists()  # another camera's files and other files stay
    assert len(sink.finished) == 2 and all(p.exists() for p in sink.finished)


def test_each_segment_has_its_own_sealed_originals_that_open_with_it_and_go_with_it(tmp_path):
    generate(tmp_path / "controller")
    key = load_private(tmp_path / "controller.key")
    recording = Recording(tmp_path / "rec", segment_s=2.0, keep_days=1.0, recovery_keys=(str(tmp_path / "controller.pub"),))
    options = Options(progress=False, recovery_keys=recording.recovery_keys)
    plan = SegmentPlan("gate", recording)
    seals = SegmentSeals(plan, options, width=128, height=96, rate=FPS, time_base=CLOCK, source="rtsp://camera")
    sink = SegmentedRecorder("gate", recording, width=128, height=96, rate=FPS, time_base=CLOCK, audio=False, options=options,
                             plan=plan, seals=seals)  # fmt: skip
    stage = SealStage(seals, options.anonymiser())
    originals = {}
    for frame in frames(50):
        frame = frame.replace(tracks=Faces.from_boxes([[40, 30, 80, 70]], track_ids=[7]))
        originals[frame.pts] = frame.image.copy()
        sink.write(stage.process(frame))  # (not anonymised: only where the cut falls matters here)
    sink.close()
    sink.commit()
    seals.commit()
    assert len(sink.finished) == 3
    for path in sink.finished:
        with av.open(str(path)) as container:
            assert tags_of(container)["veil_recovery"]  # the segment names its own sidecar
        sealed = open_for(path, key)  # made with this very segment: its id and hash match
        pts = sorted(region.pts for region in sealed.tracks()[7])
        assert len(pts) == frame_count(path)
        first = sealed.tracks()[7][0]
        assert (sealed.pixels(first) == originals[first.pts][first.rect[1]:first.rect[3], first.rect[0]:first.rect[2]]).all()
    old = sink.finished[0]
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    sink._apply_retention()
    assert not old.exists() and not sidecar_path(old).exists()
    assert all(sidecar_path(path).exists() for path in sink.finished[1:])
