"""`veil run` from the command line: bad input gives one line and exit code 2,
and never leaves an output file that looks complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import lossless_clip, raw_h264


def veil(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stream.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_clean_input_error(result, message: str):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("veil: error:") and message in lines[0], lines[0]


def no_outputs(folder: Path, stem: str):
    return not [p for p in folder.iterdir() if p.name.startswith(stem)]


def test_missing_input(tmp_path):
    assert_clean_input_error(veil("run", tmp_path / "nope.mp4", "-o", tmp_path / "out.mp4"), "input not found")
    assert no_outputs(tmp_path, "out")


def test_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 100)
    assert_clean_input_error(veil("run", fake, "-o", tmp_path / "out.mp4"), "cannot open")
    assert no_outputs(tmp_path, "out")


def test_truncated_file_without_its_index(example_clip, tmp_path):
    clip, _ = example_clip
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the mp4 index (moov) is at the end: lost
    assert_clean_input_error(veil("run", cut, "-o", tmp_path / "out.mp4", "-q"), "cannot open")
    assert no_outputs(tmp_path, "out")


def test_truncated_file_with_its_index_up_front(example_clip, tmp_path):
    clip, truth = example_clip
    whole = tmp_path / "faststart.mp4"  # veil writes the index first (+faststart)
    assert veil("run", clip, "-o", whole, "-q").returncode == 0
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = veil("run", cut, "-o", tmp_path / "out.mp4", "-q")
    assert result.returncode == 2 and "truncated" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_corrupt_bytes_in_the_middle_of_a_stream(example_clip, tmp_path):
    clip, _ = example_clip
    raw = bytearray(raw_h264(clip, tmp_path / "good.h264"))
    middle = len(raw) // 2
    raw[middle : middle + 4000] = bytes(range(256)) * 15 + bytes(160)
    bad = tmp_path / "bad.h264"
    bad.write_bytes(raw)
    result = veil("run", bad, "-o", tmp_path / "out.mp4", "-q")
    # FFmpeg either conceals the damage (exit 0: every decoded frame was anonymised)
    # or gives up with a one-line input error; never a crash or a traceback.
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2), result.stderr
    if result.returncode == 2:
        assert not (tmp_path / "out.mp4").exists()


def test_unwritable_output_folder(example_clip, tmp_path):
    clip, _ = example_clip
    assert_clean_input_error(veil("run", clip, "-o", tmp_path / "missing" / "out.mp4"), "does not exist")


def test_output_that_is_a_folder(example_clip, tmp_path):
    clip, _ = example_clip
    assert_clean_input_error(veil("run", clip, "-o", tmp_path), "it is a folder")


def test_unknown_output_format(example_clip, tmp_path):
    clip, _ = example_clip
    assert_clean_input_error(veil("run", clip, "-o", tmp_path / "out.nosuchformat", "-q"), "cannot write")
    assert no_outputs(tmp_path, "out")


def test_unsupported_codec(tmp_path):
    import numpy as np

    known = lossless_clip(tmp_path / "ffv1.mkv", [np.zeros((48, 64, 3), np.uint8)] * 3)
    # Rename the Matroska codec id to one no FFmpeg knows (same length, same layout).
    unknown = tmp_path / "unknown.mkv"
    unknown.write_bytes(known.read_bytes().replace(b"V_FFV1", b"V_ZZZZ"))
    assert_clean_input_error(veil("run", unknown, "-o", tmp_path / "out.mp4"), "unsupported video codec")
    assert no_outputs(tmp_path, "out")


def test_audio_only_file_has_no_video_stream(tmp_path):
    import av
    import numpy as np

    path = tmp_path / "audio_only.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert_clean_input_error(veil("run", path, "-o", tmp_path / "out.mp4"), "no video stream")


def test_bad_option_value_is_an_input_error(example_clip, tmp_path):
    clip, _ = example_clip
    result = veil("run", clip, "-o", tmp_path / "o.mp4", "--strength", "0")
    assert_clean_input_error(result, "strength")


def test_doctor_reports_the_encoder_and_onnx_runtime_providers():
    result = veil("doctor")
    assert result.returncode == 0, result.stderr
    assert "libx264" in result.stdout and "CPUExecutionProvider" in result.stdout


def test_a_write_failure_mid_run_is_a_one_line_output_error(example_clip, tmp_path):
    import resource
    import signal

    clip, _ = example_clip

    def small_file_limit():  # files may not grow past 64 KB: the disk is "full"
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", str(clip), "-o", str(tmp_path / "out.mp4"), "-q"],
        capture_output=True, text=True, timeout=300, preexec_fn=small_file_limit,
    )
    assert_clean_input_error(result, "File too large")
    assert no_outputs(tmp_path, "out"), "a file that failed to write is removed, partial or not"
