"""Shared fixtures: synthetic clips made from real face photos, and the path to the
real media in ../shared/data (tests that need it skip with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.demo import make_example_clip

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real media not present: {path} (a fresh clone has no ../shared)")
    return path


@pytest.fixture(scope="session")
def example_clip(tmp_path_factory) -> tuple[Path, list]:
    """640x360, 25 fps, 3 s, AAC audio, five moving faces; returns (path, boxes per frame)."""
    path = tmp_path_factory.mktemp("clips") / "example.mp4"
    truth = make_example_clip(path, width=640, height=360, seconds=3.0)
    return path, truth
