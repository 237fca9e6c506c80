"""Recordings as network video recorders keep them: one file per segment (ten minutes by
default), named by camera and UTC start time, each written under a partial name and
renamed only when finished, so a file with a real name is always a complete recording.
Old segments go by age and by the camera's total size.

Frames reach a recorder anonymised (it is a sink of the graph): nothing unanonymised is
ever written. Timestamps stay on the live capture clock, so a segment starts at the time
it covers in the run, with its audio in sync.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from veil.errors import InputError
from veil.stream.elements import OutputSink
from veil.stream.frame import Frame
from veil.stream.io.partial import partial_path
from veil.stream.io.publish import LiveEncoderSink

FORMATS = ("mkv", "mp4")


@dataclass(frozen=True)
class Recording:
    """Where and how a camera's recording is kept. ``keep_bytes``: per camera."""

    folder: Path
    segment_s: float = 600.0
    format: str = "mkv"
    keep_days: float | None = None
    keep_bytes: int | None = None

    def __post_init__(self):
        if self.format not in FORMATS:
            raise InputError(f"recording format {self.format!r}: expected one of {', '.join(FORMATS)}")
        if not self.segment_s >= 1:
            raise InputError(f"recording segment {self.segment_s:g} s: expected at least 1 s")
        for name, value in (("keep-days", self.keep_days), ("keep-gb", self.keep_bytes)):
            if value is not None and not value > 0:
                raise InputError(f"recording {name} {value:g}: expected a positive number")


def segment_name(camera: str, started: float, format: str) -> str:
    """``gate-20261203T071500Z.mkv``: sorts by time, says which camera and when it began."""
    return f"{camera}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}.{format}"


class SegmentedRecorder(OutputSink):
    """A camera's recording: a new segment whenever the current one holds ``segment_s``."""

    def __init__(self, camera: str, recording: Recording, *, width: int, height: int, rate: Fraction,
                 time_base: Fraction, audio: bool, log: Callable[[str], None] = print):
        self.camera, self.recording, self.log = camera, recording, log
        self._encoder_settings = {"width": width, "height": height, "rate": rate, "time_base": time_base, "audio": audio}
        self.recording.folder.mkdir(parents=True, exist_ok=True)
        self.current: LiveEncoderSink | None = None
        self._segment_end = 0  # pts at which the current segment is full
        self.finished: list[Path] = []  # segments completed by this recorder, in order

    @property
    def partial(self) -> Path | None:
        return None if self.current is None else self.current.partial

    @property
    def path(self) -> Path | None:
        return None if self.current is None else self.current.path

    def write(self, frame: Frame) -> None:
        if self.current is None or frame.pts >= self._segment_end:
            self._next_segment(frame)
        self.current.write(frame)
        self.frames += 1

    def _next_segment(self, frame: Frame) -> None:
        if self.current is not None:
            self.current.close()
            self.finished.append(self.current.commit())
            self._apply_retention()
        self.current = LiveEncoderSink(str(self._free_name()), **self._encoder_settings, log=self.log)
        self._segment_end = frame.pts + round(self.recording.segment_s / frame.time_base)

    def _free_name(self) -> Path:
        """This second's name, or with -2, -3 ... if a segment (or one being written) has it."""
        path = self.recording.folder / segment_name(self.camera, time.time(), self.recording.format)
        stem, count = path.stem, 1
        while path.exists() or partial_path(path).exists():
            count += 1
            path = path.with_name(f"{stem}-{count}{path.suffix}")
        return path

    def _apply_retention(self) -> None:
        """Remove this camera's finished segments older than keep_days, then the oldest while
        they hold more than keep_bytes."""
        recording = self.recording
        if recording.keep_days is None and recording.keep_bytes is None:
            return
        mine = re.compile(rf"{re.escape(self.camera)}-\d{{8}}T\d{{6}}Z(-\d+)?\.{recording.format}")
        segments = sorted((p for p in recording.folder.iterdir() if mine.fullmatch(p.name)), key=lambda p: p.stat().st_mtime)
        if recording.keep_days is not None:
            oldest = time.time() - recording.keep_days * 86400
            for path in [p for p in segments if p.stat().st_mtime < oldest]:
                self._remove(path, f"older than {recording.keep_days:g} days")
                segments.remove(path)
        if recording.keep_bytes is not None:
            sizes = {path: path.stat().st_size for path in segments}
            while segments and sum(sizes.values()) > recording.keep_bytes:
                oldest_path = segments.pop(0)
                sizes.pop(oldest_path)
                self._remove(oldest_path, f"over {recording.keep_bytes / 1e9:g} GB")

    def _remove(self, path: Path, why: str) -> None:
        path.unlink(missing_ok=True)
        self.log(f"veil: {self.camera}: removed recording {path.name} ({why})")

    def close(self) -> None:
        if self.current is not None:
            self.current.close()

    def commit(self) -> Path | None:
        """The last segment gets its real name."""
        if self.current is None:
            return None
        self.finished.append(self.current.commit())
        self.current = None
        return self.finished[-1]

    def keep(self) -> Path | None:
        """After a failed run: the last segment was finished like any other (every frame in it
        anonymised), so it is named like any other."""
        return self.commit()

    def abort(self) -> None:
        if self.current is not None:
            self.current.abort()
            self.current = None
