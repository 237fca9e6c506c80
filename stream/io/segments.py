"""Recordings as network video recorders keep them: one file per segment (ten minutes by
default), named by camera and UTC start time, each written under a partial name and
renamed only when finished, so a file with a real name is always a complete recording.
Old segments go by age and by the camera's total size.

Frames reach a recorder anonymised (it is a sink of the graph): nothing unanonymised is
ever written. With recovery keys, each segment has its own sidecar of sealed originals
(``SegmentSeals``), finished and named with it, and removed with it by retention.
Timestamps stay on the live capture clock, so a segment starts at the time it covers in
the run, with its audio in sync.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from veil.errors import InputError
from veil.stream.elements import OutputSink
from veil.stream.frame import Frame
from veil.stream.io.partial import partial_path
from veil.stream.io.provenance import marks
from veil.stream.io.publish import LiveEncoderSink
from veil.stream.options import Options
from veil.stream.recovery.sidecar import SidecarWriter, sidecar_path

FORMATS = ("mkv", "mp4")


@dataclass(frozen=True)
class Recording:
    """Where and how a camera's recording is kept. ``keep_bytes``: per camera."""

    folder: Path
    segment_s: float = 600.0
    format: str = "mkv"
    keep_days: float | None = None
    keep_bytes: int | None = None
    recovery_keys: tuple[str, ...] = ()  # public keys each segment's originals are sealed for

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


class SegmentPlan:
    """Where each segment begins and what it is called, decided once by frame pts: the seal
    stage (which sees each frame before it is anonymised) and the recorder (after) cut at
    the same frame and agree on the file."""

    def __init__(self, camera: str, recording: Recording):
        self.camera, self.recording = camera, recording
        self._segments: list[tuple[int, int, Path]] = []  # (first pts, end pts, file), the latest few
        self._lock = threading.Lock()

    def at(self, frame: Frame) -> Path:
        """The file ``frame`` belongs in; a new segment's when it is past the latest one's end."""
        with self._lock:
            for start, end, path in reversed(self._segments):
                if start <= frame.pts < end:
                    return path
            path = self._free_name()
            self._segments = [*self._segments[-2:], (frame.pts, frame.pts + round(self.recording.segment_s / frame.time_base), path)]
            return path

    def _free_name(self) -> Path:
        """This second's name, or with -2, -3 ... if a segment (or one being written) has it."""
        path = self.recording.folder / segment_name(self.camera, time.time(), self.recording.format)
        stem, count, given = path.stem, 1, {path for _, _, path in self._segments}
        while path in given or path.exists() or partial_path(path).exists():
            count += 1
            path = path.with_name(f"{stem}-{count}{path.suffix}")
        return path


class SegmentSeals:
    """The seal stage's writer for a recording (veil.stream.stages.seal): a sidecar per
    segment (``writer_for``); the recorder finishes it with its segment (``finish``) or
    drops it (``discard``)."""

    def __init__(self, plan: SegmentPlan, options: Options, *, width: int, height: int, rate: Fraction, time_base: Fraction,
                 source: str):  # fmt: skip
        self.plan, self.options = plan, options
        self._settings = {"width": width, "height": height, "rate": rate, "time_base": time_base, "source": source, "mode": options.mode}
        self._writers: dict[Path, SidecarWriter] = {}
        self._lock = threading.Lock()

    def at(self, frame: Frame) -> SidecarWriter:
        return self.writer_for(self.plan.at(frame))

    def writer_for(self, video: Path) -> SidecarWriter:
        """``video``'s sidecar, made by whichever asks first: the seal stage, or the recorder
        opening a segment whose first frames skipped sealing (covered whole while the camera
        was away); every segment then has one, if empty."""
        with self._lock:
            if video not in self._writers:
                self._writers[video] = SidecarWriter(video, self.options.recipients(), **self._settings)
            return self._writers[video]

    def finish(self, video: Path) -> None:
        """``video`` is finished: its sidecar closes with the file's hash."""
        with self._lock:
            writer = self._writers.pop(video, None)
        if writer is not None:
            writer.commit(video)

    def discard(self, video: Path) -> None:
        with self._lock:
            writer = self._writers.pop(video, None)
        if writer is not None:
            writer.abort()

    def commit(self, video: Path | None = None) -> None:
        """After the run: the recorder finished every segment it wrote; a sidecar left is for
        frames no segment holds, and goes."""
        self.abort()

    keep = commit

    def abort(self) -> None:
        with self._lock:
            writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            writer.abort()


class SegmentedRecorder(OutputSink):
    """A camera's recording: a new segment whenever the current one holds ``segment_s``.
    ``plan``: shared with the seals when there are any; ``options``: for the tags."""

    def __init__(self, camera: str, recording: Recording, *, width: int, height: int, rate: Fraction,
                 time_base: Fraction, audio: bool, log: Callable[[str], None] = print, options: Options | None = None,
                 plan: SegmentPlan | None = None, seals: SegmentSeals | None = None):  # fmt: skip
        self.camera, self.recording, self.log = camera, recording, log
        self.options, self.seals = options, seals
        self.plan = plan or SegmentPlan(camera, recording)
        self._encoder_settings = {"width": width, "height": height, "rate": rate, "time_base": time_base, "audio": audio}
        self.recording.folder.mkdir(parents=True, exist_ok=True)
        self.current: LiveEncoderSink | None = None
        self.finished: list[Path] = []  # segments completed by this recorder, in order

    @property
    def partial(self) -> Path | None:
        return None if self.current is None else self.current.partial

    @property
    def path(self) -> Path | None:
        return None if self.current is None else self.current.path

    def write(self, frame: Frame) -> None:
        path = self.plan.at(frame)
        if self.current is None or self.current.path != path:
            self._next_segment(path)
        self.current.write(frame)
        self.frames += 1

    def _next_segment(self, path: Path) -> None:
        if self.current is not None:
            self.current.close()
            self._finish(self.current.commit())
            self._apply_retention()
        sidecar = None if self.seals is None else self.seals.writer_for(path).id_hex
        metadata = None if self.options is None else marks(self.options, sidecar)
        self.current = LiveEncoderSink(str(path), **self._encoder_settings, log=self.log, metadata=metadata)

    def _finish(self, written: Path) -> None:
        self.finished.append(written)
        if self.seals is not None:
            self.seals.finish(written)

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
            sizes = {path: path.stat().st_size + _size(sidecar_path(path)) for path in segments}  # originals count too
            while segments and sum(sizes.values()) > recording.keep_bytes:
                oldest_path = segments.pop(0)
                sizes.pop(oldest_path)
                self._remove(oldest_path, f"over {recording.keep_bytes / 1e9:g} GB")

    def _remove(self, path: Path, why: str) -> None:
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)  # the originals go with the recording
        self.log(f"veil: {self.camera}: removed recording {path.name} ({why})")

    def close(self) -> None:
        if self.current is not None:
            self.current.close()

    def commit(self) -> Path | None:
        """The last segment gets its real name."""
        if self.current is None:
            return None
        self._finish(self.current.commit())
        self.current = None
        return self.finished[-1]

    def keep(self) -> Path | None:
        """After a failed run: the last segment was finished like any other (every frame in it
        anonymised), so it is named like any other."""
        return self.commit()

    def abort(self) -> None:
        if self.current is not None:
            self.current.abort()
            if self.seals is not None:
                self.seals.discard(self.current.path)
            self.current = None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
