"""The three kinds of element a graph is made of, each with its whole contract declared
(as aiortc's ``MediaStreamTrack`` does): what a source, a stage and a sink must do, and
the optional members, with their defaults. The runtime calls these and nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from veil.stream.frame import Frame


class Source(ABC):
    """Frames in presentation order. ``rate``: frames per second (nominal); ``dropped``: the
    frames a live source threw away before anonymising (always 0 for files)."""

    rate: Fraction = Fraction(30)
    dropped: int = 0
    live: bool = False  # frames arrive in real time: the newest is taken, Ctrl-C ends the run

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Let go of the input; called once, whatever happened."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Stage(ABC):
    """One step: takes a frame, returns it with what the stage added. Synchronous; the
    runtime gives each stage its own thread. A stage that holds frames back (to look ahead)
    returns the list of frames it releases, in order, and gives back the rest in ``flush``."""

    name: str = "stage"

    @abstractmethod
    def process(self, frame: Frame) -> Frame | list[Frame]: ...

    def flush(self) -> list[Frame]:
        """The frames still held at the end of the stream (or before a failed frame)."""
        return []


class Sink(ABC):
    """Where anonymised frames go. ``takes_i420``: whether frames kept on a device may come
    back as I420 planes (encoders) rather than BGR (a virtual camera)."""

    takes_i420: bool = True
    frames: int = 0

    @abstractmethod
    def write(self, frame: Frame) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Flush and finish; the runtime calls it once, after the last frame or a failure."""


class OutputSink(Sink):
    """A sink whose output the run finishes. A file is written under a partial name
    (veil.stream.io.partial): after ``close`` the run ``commit``s it (its real name),
    ``keep``s it (frames were written, the run failed: every frame in it is anonymised) or
    ``abort``s it (removed). A network stream has no file: ``partial`` is None and these
    do nothing."""

    path: Path | None = None  # the output's real name
    partial: Path | None = None  # the name it is written under until then

    @abstractmethod
    def commit(self) -> Path | None: ...

    @abstractmethod
    def keep(self) -> Path | None: ...

    @abstractmethod
    def abort(self) -> None: ...
