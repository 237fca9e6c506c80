"""The wheel: one top-level name, `veil`, holding every module and data file of the
repository's library folders; installed into a fresh virtual environment beside Hugging
Face's `kernels` package, both import and run, and removing one leaves the other whole."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

# The repository's folders and where they install.
FOLDERS = {"veil": "veil", "stream": "veil/stream", "engines": "veil/engines", "kernels": "veil/kernels"}
DATA = ("*.py", "*.cu", "*.h", "*.html", "weights/*.onnx")


def run(*command, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the repository (a build writes into its source tree)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "demo", "*.egg-info", "__pycache__", ".pytest_cache"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", source)
    (built,) = (work / "dist").glob("veil-*.whl")
    return built


def test_the_wheel_installs_veil_alone_with_every_module_and_data_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {name for name in top if not name.endswith(".dist-info")} == {"veil"}, sorted(top)
    expected = set()
    for folder, installed in FOLDERS.items():
        for pattern in DATA:
            for path in (REPO / folder).rglob(pattern):
                if "__pycache__" not in path.parts:
                    expected.add(f"{installed}/{path.relative_to(REPO / folder).as_posix()}")
    assert {"veil/stream/io/webrtc/index.html", "veil/engines/weights/generator.onnx", "veil/kernels/cuda_shim.h"} <= expected
    missing = sorted(expected - set(names))
    assert not missing, f"not in the wheel: {missing}"


def test_veil_and_hugging_faces_kernels_live_side_by_side(wheel, tmp_path, example_clip):
    """A fresh environment with the wheel and HF `kernels`; veil's own dependencies come from
    this environment's site-packages through a .pth file (it adds them to the path, and
    does not run this environment's editable install of veil)."""
    env = tmp_path / "env"
    run(sys.executable, "-m", "venv", env)
    python = env / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "zz_borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel)
    run(python, "-m", "pip", "install", "--quiet", "kernels", timeout=900)

    clip, _ = example_clip
    work = tmp_path / "work"
    work.mkdir()
    (work / "talk.mp4").symlink_to(clip)
    both = run(python, "-c", "\n".join([
        "import kernels, veil, veil.kernels.warp",
        "from kernels import get_kernel",
        "print(kernels.__file__); print(veil.__file__); print(veil.kernels.warp.__file__)",
        "veil.run('talk.mp4', 'out.mp4', mode='pixelate', log=lambda line: None)",
    ]), cwd=work)  # fmt: skip
    hf, ours, warp = both.stdout.split()
    assert hf.startswith(str(site / "kernels")) and ours.startswith(str(site / "veil")) and warp.startswith(str(site / "veil" / "kernels"))
    assert (work / "out.mp4").stat().st_size > 10_000
    assert run(env / "bin" / "veil", "--version").stdout.startswith("veil ")
    assert run(env / "bin" / "kernels", "--help").stdout

    run(python, "-m", "pip", "uninstall", "--quiet", "--yes", "veil")
    assert run(python, "-c", "import kernels; from kernels import get_kernel; print('ok')", cwd=work).stdout.strip() == "ok"
