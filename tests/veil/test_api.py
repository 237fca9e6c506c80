"""`import veil` and the command line's ways to describe a graph: the README's snippet runs as
written, and flags, a launch line and a pipeline file build the same graph, bit for bit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import veil
from tests.conftest import REPO
from tests.known_faces import judged_faces, raw_faces
from veil.cli import main
from veil.stream.detectors import DETECTOR_NAMES
from veil.testing.clips import make_example_clip
from veil.testing.privacy import decoded_frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("api") / "talk.mp4"
    return path, make_example_clip(path, width=480, height=270, seconds=1.6)


def cli(*args) -> int:
    """``veil ARGS`` in this process."""
    return main([str(arg) for arg in args])


def command(*args) -> subprocess.CompletedProcess:
    """``veil ARGS`` as a user runs it: each graph in a fresh process, from its own settings alone."""
    return subprocess.run([sys.executable, "-m", "veil", *map(str, args)], capture_output=True, text=True, timeout=300)


def frames(path: Path) -> list[np.ndarray]:
    return [image for _, image in decoded_frames(path)]


def assert_every_known_face_hidden(original: Path, anonymised: Path, truth: list) -> None:
    before, after = frames(original), frames(anonymised)
    assert len(after) == len(before)
    judged = 0
    for index, (was, now) in enumerate(zip(before, after)):
        assert not raw_faces(was, now, truth[index]), f"a known face is raw on frame {index} of {anonymised.name}"
        judged += judged_faces(truth[index], was.shape[1], was.shape[0])
    assert judged > len(before), "the clip must show faces to judge"


def test_flags_a_launch_line_and_a_pipeline_file_make_the_same_video(clip, tmp_path):
    source, _ = clip
    flags = ["--detector", "yunet", "--threshold", "0.4", "--coast", "1.5", "--backfill", "0.3",
             "--mode", "pixelate", "--strength", "1.5", "--shape", "box", "-q"]  # fmt: skip
    assert command("run", source, "-o", tmp_path / "flags.mp4", *flags).returncode == 0
    printed = command("run", source, "-o", tmp_path / "printed.mp4", *flags, "--print-pipeline").stdout.strip().splitlines()[-1]
    assert not (tmp_path / "printed.mp4").exists(), "--print-pipeline only prints"
    assert "yunet threshold=0.4" in printed and "track coast=1.5" in printed and "backfill 0.3" in printed
    assert "pixelate strength=1.5" in printed and "shape=box" in printed

    line = printed.replace(str(tmp_path / "printed.mp4"), str(tmp_path / "launch.mp4"))
    assert command("launch", line, "-q").returncode == 0
    elements = line.split(" ! ", 1)[1].rsplit(" ! ", 1)[0]
    toml = tmp_path / "run.toml"
    toml.write_text(f'source = "{source}"\n' + "".join(
        f'[[element]]\nname = "{name}"\n' + "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in props.items())
        for name, props in ((e.name, e.properties) for e in veil.Description.parse(elements).elements)
    ))  # fmt: skip
    assert command("run", "-o", tmp_path / "file.mp4", "--pipeline", toml, "-q").returncode == 0

    reference = frames(tmp_path / "flags.mp4")
    for other in ("launch.mp4", "file.mp4"):
        pictures = frames(tmp_path / other)
        assert len(pictures) == len(reference)
        for index, (a, b) in enumerate(zip(reference, pictures)):
            np.testing.assert_array_equal(a, b, err_msg=f"{other} differs from the flags' run on frame {index}")


def test_thorough_is_a_detector_element_and_its_run_hides_every_known_face(clip, tmp_path, capsys):
    source, truth = clip
    out = tmp_path / "thorough.mp4"
    assert cli("run", source, "-o", out, "--thorough", "--print-pipeline") == 0
    assert f"{source} reconnect=30 stage-timeout=30 ! thorough " in capsys.readouterr().out
    assert cli("run", source, "-o", out, "--thorough", "-q") == 0
    assert_every_known_face_hidden(source, out, truth)
    assert cli("run", source, "-o", tmp_path / "other.mp4", "--thorough", "--detector", "centerface") == 2
    assert "--thorough is a detector of its own" in capsys.readouterr().err


def test_a_pipeline_file_with_graph_flags_beside_it_is_refused(clip, tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('[[element]]\nname = "yunet"\n[[element]]\nname = "track"\n[[element]]\nname = "blur"\n')
    assert cli("run", clip[0], "-o", tmp_path / "out.mp4", "--pipeline", toml, "--mode", "solid") == 2
    assert "is the whole graph" in capsys.readouterr().err
    assert cli("run", "-o", tmp_path / "out.mp4", "--pipeline", toml) == 2
    assert "names no source" in capsys.readouterr().err
    assert not list(tmp_path.glob("out*"))


def test_a_launch_line_without_its_ends_or_with_an_unknown_element_is_one_line(tmp_path, capsys):
    assert cli("launch", "yunet ! track ! blur") == 2
    assert "starts with its source and ends with its sink" in capsys.readouterr().err
    assert cli("launch", f"in.mp4 ! yunet ! track ! smudge ! {tmp_path / 'out.mp4'}") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"veil: error: unknown element 'smudge'; valid elements: {', '.join(DETECTOR_NAMES)}, track, backfill")
    assert len(error.splitlines()) == 1


def test_python_dash_m_veil_is_the_command_and_says_its_version():
    result = subprocess.run([sys.executable, "-m", "veil", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"veil {veil.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", veil.__version__)


def readme_snippet() -> str:
    """The README's Python example: its first ```python block."""
    match = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert match, "the README shows a Python example"
    return match.group(1)


def test_the_readmes_python_snippet_runs_as_written(clip, tmp_path, monkeypatch):
    source, truth = clip
    (tmp_path / "talk.mp4").symlink_to(source)
    monkeypatch.chdir(tmp_path)
    snippet = readme_snippet()
    assert len([line for line in snippet.splitlines() if line.strip() and not line.startswith("#")]) <= 6
    exec(compile(snippet, "README.md", "exec"), {})
    written = sorted(path.name for path in tmp_path.iterdir() if path.name != "talk.mp4")
    assert written == ["talk_blurred.mp4", "talk_pixelated.mp4"], written
    for name in written:
        assert_every_known_face_hidden(source, tmp_path / name, truth)


def test_import_veil_stays_light():
    """``import veil`` (and the errors every layer imports) loads no model runtime or media library."""
    code = "import sys, veil, veil.errors; print(sorted(m for m in ('cv2', 'av', 'torch', 'onnxruntime') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
