"""`veil run` from the command line: bad input gives one line and exit code 2,
and never leaves an output file that looks complete."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lossless_clip, raw_h264
from veil.engines import MEDIAPIPE_WEIGHTS
from veil.testing.privacy import decoded_frames, leaked_faces

MESH_MODEL = MEDIAPIPE_WEIGHTS / "face_mesh.onnx"  # an ONNX model that is not a generator


def veil(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "veil", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


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


@pytest.mark.parametrize(("flags", "message"), [
    (("--mode", "blur", "--generator", "any.onnx"), "--generator is the synth mode's"),
    (("--mode", "synth", "--generator", "missing.onnx"), "ONNX model not found"),
    (("--mode", "synth", "--generator", str(MESH_MODEL)), "not a Veil generator"),
], ids=["not synth", "missing file", "another model"])
def test_a_bad_generator_is_one_line_before_any_output(example_clip, tmp_path, flags, message):
    clip, _ = example_clip
    out = tmp_path / "o.mp4"
    assert_clean_input_error(veil("run", clip, "-o", out, *flags), message)
    assert not out.exists()


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
        [sys.executable, "-m", "veil", "run", str(clip), "-o", str(tmp_path / "out.mp4"), "-q"],
        capture_output=True, text=True, timeout=300, preexec_fn=small_file_limit,
    )
    assert_clean_input_error(result, "File too large")
    assert no_outputs(tmp_path, "out"), "a file that failed to write is removed, partial or not"


# --- every numeric flag, every bad value ------------------------------------------------------

NUMERIC_FLAGS = [
    "--keyframe-every", "--threshold", "--detect-size", "--detect-every", "--strength", "--margin", "--coast",
    "--coast-tentative", "--stage-timeout", "--target-delay", "--reconnect", "--backfill", "--match-threshold",
]  # fmt: skip
BAD_VALUES = ["nan", "inf", "-inf", "0", "-1", "1e9", "1e400", "abc"]


def test_every_numeric_flag_of_veil_run_is_known_to_the_sweep():
    from veil.cli import _parser

    run = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    typed = {a.option_strings[-1] for a in run._actions if a.type is not None and a.option_strings}
    assert typed == set(NUMERIC_FLAGS), "a new numeric flag must join the sweep below"


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> tuple[Path, list]:
    from veil.testing.clips import make_example_clip

    path = tmp_path_factory.mktemp("sweep") / "short.mp4"
    return path, make_example_clip(path, width=480, height=270, seconds=1.2)


def in_process(argv, capsys) -> tuple[int, str]:
    """``veil ARGV`` in this process (quicker than a new one for each of dozens of values)."""
    from veil.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's own exit
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag", NUMERIC_FLAGS)
def test_a_bad_number_is_one_line_and_exit_2_or_a_run_the_gate_cannot_see_through(flag, short_clip, tmp_path, capsys, gate):
    """nan, infinities, zero, negative and huge values: either refused before anything is
    opened (exit 2, one line naming the flag, no file), or accepted and then the output
    passes the every-frame check and the gate on every frame."""
    from tests.known_faces import raw_faces

    clip, truth = short_clip
    for value in BAD_VALUES:
        out = tmp_path / f"out{flag}{value}.mp4"
        code, err = in_process(["run", clip, "-o", out, "-q", flag, value], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        if code == 2:
            assert len(lines) == 1 and lines[0].startswith("veil: error:") and flag in lines[0], (flag, value, err)
            assert "Traceback" not in err
            assert not list(tmp_path.glob(f"out{flag}{value}*")), f"{flag} {value}: refused, yet a file was left"
            continue
        assert code == 0, (flag, value, err)
        assert "Traceback" not in err
        for (index, before), (_, after) in zip(decoded_frames(clip), decoded_frames(out), strict=True):
            assert raw_faces(before, after, truth[index]) == [], f"{flag} {value}: a face left raw on frame {index}"
            assert len(leaked_faces(gate.detect(before), after, gate)) == 0, f"{flag} {value}: the gate finds a face on frame {index}"


def test_a_faster_encoder_preset_writes_every_frame_anonymised_and_a_bad_one_is_one_line(short_clip, tmp_path, capsys, gate):
    """--preset trades file size for the cores: the frames are the same frames, masked the same.
    Where no x264 encodes (a photo, WebRTC) it is refused."""
    import cv2

    from tests.known_faces import raw_faces

    clip, truth = short_clip
    out = tmp_path / "fast.mp4"
    code, err = in_process(["run", clip, "-o", out, "-q", "--preset", "ultrafast"], capsys)
    assert code == 0, err
    assert b"subme=0" in out.read_bytes()  # x264 writes its settings into the stream: ultrafast's
    for (index, before), (_, after) in zip(decoded_frames(clip), decoded_frames(out), strict=True):
        assert raw_faces(before, after, truth[index]) == [], f"a face left raw on frame {index}"
        assert len(leaked_faces(gate.detect(before), after, gate)) == 0, f"the gate finds a face on frame {index}"
    code, err = in_process(["run", clip, "-o", tmp_path / "bad.mp4", "--preset", "turbo"], capsys)
    assert code == 2 and "--preset" in err and "superfast" in err and not list(tmp_path.glob("bad*"))
    code, err = in_process(["run", clip, "-o", tmp_path / "web.webm", "-q", "--preset", "superfast"], capsys)
    assert code == 2 and "H.264 outputs" in err and not list(tmp_path.glob("web*"))
    live = tmp_path / "live.mkv"  # a live run's recording is x264's too, at the chosen preset
    code, err = in_process(["run", clip, "-o", live, "-q", "--live", "--preset", "ultrafast"], capsys)
    assert code == 0, err
    assert b"subme=0" in live.read_bytes()
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), next(image for _, image in decoded_frames(clip)))
    code, err = in_process(["run", photo, "-o", tmp_path / "photo_out.png", "--preset", "superfast"], capsys)
    assert code == 2 and "--preset is for video outputs" in err and not list(tmp_path.glob("photo_out*"))
    code, err = in_process(["run", clip, "-o", "webrtc://127.0.0.1:0", "--preset", "superfast"], capsys)
    assert code == 2 and "--preset is x264's" in err


# --- outputs are claimed ----------------------------------------------------------------------


def test_a_second_run_on_the_same_output_fails_at_once_and_the_first_finishes_intact(tmp_path):
    import time

    from veil.testing.clips import make_example_clip

    clip, out = tmp_path / "long.mp4", tmp_path / "out.mp4"
    truth = make_example_clip(clip, width=1280, height=720, seconds=8, audio=False)
    first = subprocess.Popen([sys.executable, "-m", "veil", "run", str(clip), "-o", str(out), "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    partial = tmp_path / "out.partial.mp4"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = veil("run", clip, "-o", out, "-q")
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert_clean_input_error(second, "another run is writing it now")
    with av_open(out) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(truth)


def test_a_partial_file_no_run_holds_is_overwritten(example_clip, tmp_path):
    clip, truth = example_clip
    (tmp_path / "out.partial.mp4").write_bytes(b"left by a run that was killed")
    result = veil("run", clip, "-o", tmp_path / "out.mp4", "-q")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out.partial.mp4").exists()
    with av_open(tmp_path / "out.mp4") as container:
        assert sum(1 for _ in container.decode(video=0)) == len(truth)


def test_a_claim_is_exclusive_until_it_is_committed_or_given_up(tmp_path):
    from veil.errors import OutputError
    from veil.stream.io.partial import PartialFile

    target = tmp_path / "out.mp4"
    claim = PartialFile(target)
    with pytest.raises(OutputError, match="another run is writing it now"):
        PartialFile(target)
    claim.partial.write_bytes(b"frames")
    claim.commit()
    assert target.read_bytes() == b"frames" and not claim.partial.exists()
    PartialFile(target).abort()  # free again once committed
    kept = PartialFile(target)
    kept.keep()
    PartialFile(target).abort()  # and once a kept partial file is let go
    assert not kept.partial.exists()


def av_open(path):
    import av

    return av.open(str(path))
