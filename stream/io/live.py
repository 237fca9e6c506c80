"""Live sources: cameras and network streams, read as fast as they arrive, of which
the pipeline always takes the newest frame.

Latency beats completeness live, so a frame the pipeline is too busy to take is
dropped here, before anonymising, never after. Its audio is not dropped: it moves
to the next frame. A network source that fails or ends is reopened with backoff;
meanwhile the output keeps going with the last picture covered whole (fail closed,
and viewers see the stream is still up).

Timestamps: live frames are stamped on one capture clock (``CLOCK`` units since the
run's first frame), so a reconnect never sends time backwards. Within a connection
the source's own timing is kept (mapped onto that clock once), so video and audio
stay in sync exactly as the source had them.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import av

from veil.errors import InputError, reason
from veil.stream.elements import Source
from veil.stream.frame import Frame
from veil.stream.io.source import open_input, upright

CLOCK = Fraction(1, 90000)
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "rtp", "http", "https")
OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0  # a source silent this long is reconnected
STALL_S = 1.0  # a source silent this long is covered meanwhile
MAX_BACKOFF_S = 8.0


class SourceLost(RuntimeError):
    """Marks the covered frames sent while a live source is away."""


def is_live_url(url: str) -> bool:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return scheme in NETWORK_SCHEMES or is_camera(url)


def is_camera(url: str) -> bool:
    return url.startswith(("/dev/video", "video=", "avfoundation:"))


def camera_input(device: str, size: str | None = None, fps: float | None = None) -> tuple[str, str, dict]:
    """(url, FFmpeg input format, options) for a webcam on this platform."""
    options = {}
    if size:
        options["video_size"] = size
    if fps:
        options["framerate"] = f"{fps:g}"
    if device.startswith("video="):
        return device, "dshow", options
    if device.startswith("avfoundation:") or sys.platform == "darwin":
        return device.removeprefix("avfoundation:"), "avfoundation", options
    return device, "v4l2", options


class FrameSlot:
    """Holds the newest frame only: a newer one replaces it (a drop) and inherits its
    audio. Thread-safe; producers never block, so a slow pipeline cannot stall a
    capture."""

    def __init__(self):
        self._ready = threading.Condition()
        self._frame: Frame | None = None
        self._ended = False
        self._error: BaseException | None = None
        self.received = 0
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._ready:
            if self._ended:
                return  # the consumer has stopped: nothing more is taken
            if self._frame is not None:
                self.dropped += 1
                frame = frame.replace(audio=self._frame.audio + frame.audio)
            self._frame = frame
            self.received += 1
            self._ready.notify()

    def end(self, error: BaseException | None = None) -> None:
        """No more frames; ``take`` raises ``error`` if one is given."""
        with self._ready:
            self._ended, self._error = True, error
            self._ready.notify_all()

    def take(self, timeout: float) -> Frame | None:
        """The newest frame, None if none came within ``timeout``; StopIteration at the end."""
        with self._ready:
            if self._frame is None and not self._ended:
                self._ready.wait(timeout)
            frame, self._frame = self._frame, None
            if frame is not None:
                return frame
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopIteration
            return None


class CoverGaps:
    """Iterates a slot for the graph: numbers the frames, and while nothing arrives for
    ``gap_s`` (a lost source) repeats the last picture marked failed, so the graph
    covers it whole and the output stays up."""

    def __init__(self, slot: FrameSlot, *, gap_s: float, is_lost: Callable[[], bool] = lambda: True):
        self.slot, self.gap_s, self.is_lost = slot, gap_s, is_lost

    def __iter__(self) -> Iterator[Frame]:
        index, last = 0, None
        while True:
            try:
                frame = self.slot.take(self.gap_s)
            except StopIteration:
                return
            if frame is None:
                if last is None or not self.is_lost():
                    continue
                now = time.monotonic()
                elapsed = round((now - last.captured) / last.time_base)
                frame = last.replace(
                    pts=last.pts + max(1, elapsed), captured=now, audio=(),
                    detections=None, tracks=None, failure=SourceLost("source lost; picture covered"),
                )  # fmt: skip
            elif last is not None and frame.pts <= last.pts:
                frame = frame.replace(pts=last.pts + 1)
            last = frame.replace(index=index)
            index += 1
            yield last


class LiveSource(Source):
    """A camera or network stream (or, with ``realtime``, a file played at its own pace,
    as a stand-in for a camera), read by its own thread into a ``FrameSlot``.

    The first connection is made here, so a wrong URL fails at once; later failures
    reconnect until no frame has come for ``give_up_s``.
    """

    live = True

    def __init__(
        self,
        url: str,
        *,
        format: str | None = None,
        options: dict | None = None,
        realtime: bool = False,
        give_up_s: float = 30.0,
        log: Callable[[str], None] = print,
    ):
        if give_up_s <= 0:
            raise InputError(f"the reconnect time must be positive, got {give_up_s:g}")
        self.url, self.format, self.log = url, format, log
        # Network streams: probe 1 s, not FFmpeg's 5, so a run starts (and a lost
        # source comes back) quickly; stream headers arrive well within that.
        self.options = {"analyzeduration": "1000000", **(options or {})} if "://" in url else dict(options or {})
        if url.lower().startswith("rtsp"):
            self.options.setdefault("rtsp_transport", "tcp")
        self.realtime, self.give_up_s = realtime, give_up_s
        self.reconnects = is_live_url(url) and not realtime
        self.reconnections = 0  # connections made again after a loss
        self.slot = FrameSlot()
        self._stop = threading.Event()
        self._state = threading.Lock()
        self._lost_since: float | None = None
        self._last_frame_at = time.monotonic()
        self.t0 = time.monotonic()
        self.container = self._open()
        self._frames = self._decode(self.container)
        first = next(self._frames, None)
        if first is None:
            self.container.close()
            raise InputError(f"no decodable video frame in {url}")
        self.height, self.width = first.image.shape[:2]
        self.has_audio = bool(self.container.streams.audio)
        self.slot.put(first)
        self._thread = threading.Thread(target=self._read, name="veil-capture", daemon=True)
        self._thread.start()

    # --- connections --------------------------------------------------------
    def _open(self, open_timeout: float = OPEN_TIMEOUT_S) -> av.container.InputContainer:
        container = open_input(self.url, self.options, format=self.format, timeout=(open_timeout, READ_TIMEOUT_S))
        video = container.streams.video[0]
        self.rate = Fraction(video.average_rate or video.guessed_rate or 30)
        self._offset: float | None = None  # capture clock minus source time, this connection
        self._first_source_time: float | None = None  # for realtime pacing
        self._wall_start = time.monotonic()
        return container

    def _decode(self, container) -> Iterator[Frame]:
        video = container.streams.video[0]
        pending: list[av.AudioFrame] = []
        for packet in container.demux([video, *container.streams.audio]):
            for decoded in packet.decode():
                if packet.stream is video:
                    yield self._video_frame(decoded, pending)
                    pending = []
                else:
                    pending.append(self._restamp_audio(decoded))

    def _source_time(self, decoded) -> float | None:
        return None if decoded.pts is None or decoded.time_base is None else float(decoded.pts * decoded.time_base)

    def _video_frame(self, decoded: av.VideoFrame, audio: list) -> Frame:
        source_time = self._source_time(decoded)
        if self.realtime and source_time is not None:
            if self._first_source_time is None:
                self._first_source_time = source_time
            self._wait_until(self._wall_start + source_time - self._first_source_time)
        now = time.monotonic()
        pts = round(self._on_clock(source_time, now) / CLOCK)  # CoverGaps keeps it rising
        image = upright(decoded.to_ndarray(format="bgr24"), decoded.rotation)
        return Frame(image=image, pts=pts, time_base=CLOCK, index=0, audio=tuple(audio), captured=now)

    def _on_clock(self, source_time: float | None, now: float) -> float:
        """Seconds on the capture clock for a frame the source times at ``source_time``."""
        if source_time is None:
            return now - self.t0
        if self._offset is None:
            self._offset = (now - self.t0) - source_time
        return source_time + self._offset

    def _restamp_audio(self, decoded: av.AudioFrame) -> av.AudioFrame:
        when = self._on_clock(self._source_time(decoded), time.monotonic())
        decoded.pts = round(when * decoded.sample_rate)
        decoded.time_base = Fraction(1, decoded.sample_rate)
        return decoded

    def _wait_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    # --- the capture thread -----------------------------------------------
    def _read(self) -> None:
        error = None
        try:
            while not self._stop.is_set() and self._pump():
                pass
        except BaseException as failure:  # noqa: BLE001 - handed to the pipeline through the slot
            error = failure
        finally:
            self.slot.end(error)

    def _pump(self) -> bool:
        """Read one connection to its end; True if a new connection was made."""
        why = "the stream ended"
        try:
            for frame in self._frames:
                if self._stop.is_set():
                    return False
                with self._state:
                    self._last_frame_at = frame.captured
                    lost_since, self._lost_since = self._lost_since, None
                if lost_since is not None:
                    self.log(f"veil: source {self.url} is back after {frame.captured - lost_since:.1f} s")
                self.slot.put(frame)
        except (av.FFmpegError, OSError) as error:
            why = reason(error)
        self.container.close()
        if self._stop.is_set():
            return False
        if not self.reconnects:
            if why != "the stream ended":
                raise InputError(f"corrupt or broken stream in {self.url}: {why}")
            return False
        return self._reconnect(why)

    def _reconnect(self, why: str) -> bool:
        with self._state:
            if self._lost_since is None:
                self._lost_since = time.monotonic()
            lost = self._last_frame_at
        self.log(f"veil: source {self.url} lost ({why}); output covered, reconnecting")
        delay = 0.5
        while not self._stop.is_set():  # the first try is at once: the source may be back already
            left = self.give_up_s - (time.monotonic() - lost)
            try:
                self.container = self._open(open_timeout=max(1.0, min(OPEN_TIMEOUT_S, left)))
                self._frames = self._decode(self.container)
                self.reconnections += 1
                return True
            except InputError as error:
                why = str(error)
            if time.monotonic() - lost > self.give_up_s:
                raise InputError(f"source {self.url} lost for {self.give_up_s:g} s ({why}); giving up")
            self.log(f"veil: reconnect failed ({why}); next try in {delay:.1f} s")
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
        return False

    def is_lost(self) -> bool:
        """True while the source is away: failed, or silent for ``STALL_S``."""
        with self._state:
            if self._lost_since is None and time.monotonic() - self._last_frame_at > STALL_S:
                self._lost_since = self._last_frame_at
                stalled = True
            else:
                stalled = False
            lost = self._lost_since is not None
        if stalled:
            self.log(f"veil: source {self.url} silent for {STALL_S:g} s; output covered until it is back")
        return lost

    def __iter__(self) -> Iterator[Frame]:
        return iter(CoverGaps(self.slot, gap_s=max(0.5, 3 / float(self.rate)), is_lost=self.is_lost))

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    @property
    def received(self) -> int:
        return self.slot.received

    def end(self) -> None:
        """Hand out no more frames: the run ends as at the end of a stream, its outputs
        finished (``close`` still lets go of the input). Safe from any thread."""
        self.slot.end()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=READ_TIMEOUT_S + 1)
        self.container.close()


def without_password(url: str) -> str:
    """rtsp://user:secret@host/... as rtsp://user@host/...: status pages and sidecar headers are not for secrets."""
    if "://" not in url or "@" not in url.split("://", 1)[1].split("/", 1)[0]:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.split("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
