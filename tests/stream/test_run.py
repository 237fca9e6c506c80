"""`veil run` end to end on real media: videos, photos, folders, the audit log, and
what happens when a stage fails mid-run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from tests.conftest import raw_h264
from veil.errors import StageError
from veil.stream.detectors import make_detector
from veil.stream.faces import Faces
from veil.stream.jobs import run_video
from veil.stream.options import Options
from veil.testing.privacy import decoded_frames


def veil(*args):
    return subprocess.run([sys.executable, "-m", "veil", *map(str, args)], capture_output=True, text=True, timeout=600)


def frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_video_run_keeps_every_frame_and_audio_and_writes_the_audit(example_clip, tmp_path):
    clip, truth = example_clip
    out, audit = tmp_path / "out.mp4", tmp_path / "audit.jsonl"
    result = veil("run", clip, "-o", out, "--audit", audit)
    assert result.returncode == 0, result.stderr
    assert frame_count(out) == len(truth)
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1
    # The closing lines: throughput, faces, per-stage latency.
    assert "fps" in result.stdout and "tracks anonymised" in result.stdout
    for stage in ("decode", "detect", "track", "anonymise", "encode"):
        assert stage in result.stdout
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(truth)))
    assert all(f["source"] in ("detection", "tracker") for r in records for f in r["faces"])
    assert sum(len(r["faces"]) for r in records) >= sum(len(t) for t in truth) * 0.8
    assert not list(tmp_path.glob("*.partial*"))


def astronaut_photo(path):
    from skimage import data

    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))


def test_photo_in_photo_out(tmp_path):
    photo, out = tmp_path / "group.jpg", tmp_path / "group_anon.png"
    astronaut_photo(photo)
    result = veil("run", photo, "-o", out)
    assert result.returncode == 0, result.stderr
    before, after = cv2.imread(str(photo)), cv2.imread(str(out))
    assert after.shape == before.shape
    face = np.s_[80:160, 190:250]  # the astronaut's eyes, nose and mouth
    assert np.abs(after[face].astype(int) - before[face].astype(int)).mean() > 10
    assert (after[400:, :100] == before[400:, :100]).all()  # far from the face: untouched


def test_a_photo_with_contour_masks_follow_the_face_mesh_and_detector_mediapipe(tmp_path):
    photo = tmp_path / "group.jpg"
    astronaut_photo(photo)
    changed = {}
    for name, options in {"ellipse": (), "contour": ("--shape", "contour"), "mediapipe": ("--shape", "contour", "--detector", "mediapipe")}.items():
        result = veil("run", photo, "-o", tmp_path / f"{name}.png", "--mode", "solid", *options)
        assert result.returncode == 0, result.stderr
        after = cv2.imread(str(tmp_path / f"{name}.png"))
        assert (after[80:160, 190:250] == (128, 128, 128)).all()  # the eyes, nose and mouth: all fill
        changed[name] = (after != cv2.imread(str(photo))).any(axis=2)
    # the outline is tighter than the ellipse round the box, and both detectors' boxes lead to one mesh
    assert changed["contour"].sum() < 0.8 * changed["ellipse"].sum()
    assert (changed["contour"] != changed["mediapipe"]).mean() < 0.01


def test_folder_in_folder_out_mirrors_names(example_clip, tmp_path):
    clip, truth = example_clip
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    astronaut_photo(src / "a.jpg")
    astronaut_photo(src / "sub" / "b.png")
    shutil.copy(clip, src / "sub" / "clip.mp4")
    (src / "notes.txt").write_text("not media")
    result = veil("run", src, "-o", dst, "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()) == ["a.jpg", "sub/b.png", "sub/clip.mp4"]
    assert frame_count(dst / "sub" / "clip.mp4") == len(truth)
    assert "1 other files skipped" in result.stdout


class FailsOnFrame:
    """The real detector, except that it raises on one frame."""

    def __init__(self, index):
        self.inner, self.index, self.calls = make_detector("yunet"), index, 0

    def detect(self, image) -> Faces:
        self.calls += 1
        if self.calls - 1 == self.index:
            raise RuntimeError("GPU fell off the bus")
        return self.inner.detect(image)


def test_a_detector_failure_covers_the_frame_and_fails_the_run(example_clip, tmp_path):
    clip, _ = example_clip
    out = tmp_path / "out.mp4"
    with pytest.raises(StageError, match="GPU fell off the bus"):
        run_video(clip, out, Options(progress=False, backfill_s=0), FailsOnFrame(10), log=lambda *_: None)
    assert not out.exists(), "a failed run must not leave a file that looks complete"
    partial = tmp_path / "out.partial.mp4"
    with av.open(str(partial)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert 10 < len(frames) < 75
    # The failed frame is pixelated whole: a coarse grid of flat blocks.
    assert np.abs(np.diff(frames[10].astype(int), axis=1)).mean() < np.abs(np.diff(frames[9].astype(int), axis=1)).mean() / 2


def test_raw_h264_and_image_sequences_are_videos_too(example_clip, tmp_path):
    clip, truth = example_clip
    raw_h264(clip, tmp_path / "raw.h264")
    assert veil("run", tmp_path / "raw.h264", "-o", tmp_path / "raw.mp4", "-q").returncode == 0
    assert frame_count(tmp_path / "raw.mp4") == len(truth)

    sequence = tmp_path / "seq"
    sequence.mkdir()
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 10:
                break
            cv2.imwrite(str(sequence / f"img{i:04d}.png"), frame.to_ndarray(format="bgr24"))
    result = veil("run", sequence / "img%04d.png", "-o", tmp_path / "seq.mp4", "-q")
    assert result.returncode == 0, result.stderr
    assert frame_count(tmp_path / "seq.mp4") == 10


def test_sigterm_stops_the_run_cleanly_and_keeps_a_playable_partial_file(tmp_path):
    import signal
    import time

    from veil.testing.clips import make_example_clip

    clip, out = tmp_path / "long.mp4", tmp_path / "out.mp4"
    make_example_clip(clip, width=1280, height=720, seconds=12, audio=False)
    run = subprocess.Popen([sys.executable, "-m", "veil", "run", clip, "-o", out, "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "out.partial.mp4"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 100_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=30)
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    written = frame_count(partial)  # the partial file is finished, so it decodes
    assert 0 < written < 300 and f"the {written} frames written" in stdout


# --- the audit log ------------------------------------------------------------------------


def test_an_audit_log_on_a_full_disk_is_one_line_and_no_output_is_left(example_clip, tmp_path):
    from tests.veil.test_cli import assert_clean_input_error

    clip, _ = example_clip
    result = veil("run", clip, "-o", tmp_path / "out.mp4", "--audit", "/dev/full", "-q")
    assert_clean_input_error(result, "cannot write audit log /dev/full: No space left on device")
    assert not list(tmp_path.iterdir()), "an output whose audit could not be written is not kept"


def test_a_photo_gets_its_audit_line(tmp_path):
    photo, audit = tmp_path / "group.jpg", tmp_path / "audit.jsonl"
    astronaut_photo(photo)
    result = veil("run", photo, "-o", tmp_path / "out.png", "--audit", audit)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in audit.read_text().splitlines()]
    assert line["frame"] == 0 and len(line["faces"]) == 1 and line["faces"][0]["source"] == "detection"


def test_the_audit_of_a_failed_run_is_partial_beside_the_partial_video(example_clip, tmp_path):
    clip, _ = example_clip
    audit = tmp_path / "audit.jsonl"
    with pytest.raises(StageError):
        run_video(clip, tmp_path / "out.mp4", Options(progress=False, backfill_s=0, audit=str(audit)), FailsOnFrame(10), log=lambda *_: None)
    assert not audit.exists() and not (tmp_path / "out.mp4").exists()
    lines = [json.loads(text) for text in (tmp_path / "audit.partial.jsonl").read_text().splitlines()]
    written = frame_count(tmp_path / "out.partial.mp4")
    # the frames before the failure; the failed one was covered whole, never audited as masked
    assert [line["frame"] for line in lines][:10] == list(range(10)) and 10 not in [line["frame"] for line in lines]
    assert written >= 10


def test_a_failed_stage_is_exit_1_and_every_frame_of_the_partial_file_is_anonymised(example_clip, tmp_path, monkeypatch, capsys):
    import veil.cli
    import veil.stream.pipeline
    from tests.known_faces import raw_faces

    clip, truth = example_clip
    monkeypatch.setattr(veil.stream.pipeline, "make_detector", lambda *args, **kwargs: FailsOnFrame(30))
    code = veil.cli.main(["run", str(clip), "-o", str(tmp_path / "out.mp4"), "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.strip().startswith("veil: failed:") and "GPU fell off the bus" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.mp4").exists()
    partial = tmp_path / "out.partial.mp4"
    frames = 0
    for (index, before), (_, after) in zip(decoded_frames(clip), decoded_frames(partial)):
        frames += 1
        assert raw_faces(before, after, truth[index]) == [], f"a face left raw on frame {index} of the partial file"
    assert 30 < frames < len(truth)


# --- folders --------------------------------------------------------------------------------


def test_a_folder_run_tries_every_file_names_each_in_one_audit_and_fails_at_the_end(example_clip, tmp_path):
    clip, truth = example_clip
    src, dst, audit = tmp_path / "in", tmp_path / "out", tmp_path / "audit.jsonl"
    src.mkdir()
    shutil.copy(clip, src / "a.mp4")
    (src / "b.mp4").write_bytes(b"not a video" * 100)  # fails, in the middle
    shutil.copy(clip, src / "c.webm")  # an mp4 under a webm name: decoded by content, written as webm
    astronaut_photo(src / "d.jpg")
    result = veil("run", src, "-o", dst, "-q", "--audit", audit)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line"
    assert "1 of 4 files failed: b.mp4" in result.stderr
    assert sorted(p.name for p in dst.iterdir()) == ["a.mp4", "c.webm", "d.jpg"]
    assert frame_count(dst / "c.webm") == len(truth)
    lines = [json.loads(text) for text in audit.read_text().splitlines()]
    assert all("file" in line for line in lines)
    assert [line["file"] for line in lines if "written" in line or "failed" in line] == ["a.mp4", "b.mp4", "c.webm", "d.jpg"]
    assert sum(line["file"] == "a.mp4" and "frame" in line for line in lines) == len(truth)
    assert sum(line["file"] == "c.webm" and "frame" in line for line in lines) == len(truth)
    assert "cannot open" in next(line["failed"] for line in lines if line["file"] == "b.mp4")
