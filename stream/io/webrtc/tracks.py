"""What goes out: an outgoing track fed by graph output only, and the broadcast viewers watch."""

from __future__ import annotations

import asyncio
import contextlib
import time

import av

from veil.errors import MissingDependency
from veil.stream.frame import Frame
from veil.stream.io.live import CLOCK
from veil.stream.io.sink import video_picture

try:
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError
except ImportError as error:
    raise MissingDependency(f"WebRTC needs {error.name}: pip install 'veil[webrtc]'") from None


class OutputTrack(MediaStreamTrack):
    """An outgoing video track fed with graph output only; keeps the newest frame.

    ``push`` and ``recv`` both run on the event loop. With ``restamp`` the frames get
    this track's own 90 kHz clock (a broadcast mixes graphs with different clocks);
    otherwise they keep the graph's pts, which are already on ``CLOCK``.
    """

    kind = "video"

    def __init__(self, *, restamp: bool):
        super().__init__()
        self.restamp = restamp
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self._t0: float | None = None
        self._last_pts = -1
        self.sent = 0

    def push(self, frame: Frame) -> None:
        self._frame = frame
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while self._frame is None and self.readyState == "live":
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        frame, self._frame = self._frame, None
        picture = video_picture(frame)
        picture.pts = self._pts(frame)
        picture.time_base = CLOCK
        self.sent += 1
        return picture

    def _pts(self, frame: Frame) -> int:
        if self.restamp:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            pts = round((now - self._t0) / CLOCK)
        else:
            pts = round(frame.pts * frame.time_base / CLOCK)
        self._last_pts = max(self._last_pts + 1, pts)
        return self._last_pts

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class Broadcast:
    """What ``/watch`` viewers see: one source at a time, the newest one still on.

    Runs on the event loop. A viewer that joins gets the latest frame at once.
    """

    def __init__(self):
        self.tracks: set[OutputTrack] = set()
        self.sources: list[object] = []
        self.latest: Frame | None = None

    def add_source(self, key: object) -> None:
        self.sources.append(key)

    def remove_source(self, key: object) -> None:
        if key in self.sources:
            self.sources.remove(key)

    def publish(self, key: object, frame: Frame) -> None:
        if not self.sources or self.sources[-1] is not key:
            return
        self.latest = frame
        for track in self.tracks:
            track.push(frame)

    def subscribe(self) -> OutputTrack:
        track = OutputTrack(restamp=True)
        if self.latest is not None:
            track.push(self.latest)
        self.tracks.add(track)
        return track

    def unsubscribe(self, track: OutputTrack) -> None:
        self.tracks.discard(track)
        track.stop()


async def discard(track: MediaStreamTrack) -> None:
    """Read a track nobody uses, so aiortc's unbounded queue for it stays empty."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()
