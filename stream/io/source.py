"""Video sources: anything FFmpeg opens (files, URLs, image sequences), through PyAV."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from veil.errors import InputError, reason
from veil.stream.elements import Source
from veil.stream.frame import Frame


def open_input(url: str, options: dict | None = None, *, format: str | None = None, timeout=None) -> av.container.InputContainer:
    """Open with FFmpeg; every failure becomes a one-line InputError. ``timeout``
    (seconds, or (open, read)) makes a stalled network peer raise instead of blocking."""
    try:
        container = av.open(url, mode="r", format=format, options=options or {}, timeout=timeout)
    except FileNotFoundError:
        raise InputError(f"input not found: {url}") from None
    except (av.FFmpegError, OSError, ValueError) as error:
        raise InputError(f"cannot open {url}: {reason(error)}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"no video stream in {url}")
    return container


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply display-matrix rotation (degrees counterclockwise), as players do."""
    quarter_turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


LOOKAHEAD = 8  # frames decoded before the first one leaves, so its time is judged by those after it


class PresentationTimes:
    """Presentation timestamps an encoder takes: strictly rising, the source's own where they
    are valid.

    Where they are not (AVI stores decode order, so decoded frames come out as 1, 4, 3, 5,
    2, ...; raw streams carry none; a splice sends them backwards) the time is chosen as
    FFmpeg's best-effort timestamp does (libavcodec's ``guess_correct_pts``: trust pts or dts,
    whichever has gone backwards less often), and with neither, one frame after the last.
    Whatever is chosen, a time that does not rise shifts it and every later frame forward
    to one frame after the last, so no frame is ever dropped or reordered for it. Every
    frame is first ``seen`` (on decoding, up to ``LOOKAHEAD`` frames ahead) and then
    ``timed`` (on leaving the source).
    """

    def __init__(self, frame_step: int):
        self.step = max(1, frame_step)
        self.faulty_pts = self.faulty_dts = 0
        self._last_pts = self._last_dts = self._last = None
        self._shift = 0
        self.derived = 0  # frames whose time is not their own pts

    def seen(self, pts: int | None, dts: int | None) -> None:
        if pts is not None:
            self.faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        if dts is not None:
            self.faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts

    def timed(self, pts: int | None, dts: int | None) -> int:
        trust_pts = self._last_dts is None or self.faulty_pts <= self.faulty_dts  # dts seen, and faulted less: dts
        chosen = pts if trust_pts else dts  # None (a raw stream; a decoder's last frames): the frame rate
        if chosen is None:
            time = 0 if self._last is None else self._last + self.step
        else:
            time = chosen + self._shift
            if self._last is not None and time <= self._last:
                self._shift += self._last + self.step - time
                time = self._last + self.step
        self.derived += time != pts
        self._last = time
        return time


class VideoSource(Source):
    """Decodes the first video stream to upright BGR frames, with their original pts where
    those are usable (``PresentationTimes``; ``times.derived`` counts the frames timed otherwise).

    The first frame is decoded on opening, so a file that opens but holds nothing
    decodable fails here, before any output exists; ``width`` and ``height`` are its.
    Packets of the audio streams are carried on the frame decoded before them (see
    ``Frame.audio``), so a sink can stream-copy them in sync. A source is read once.
    """

    def __init__(self, url: str, options: dict | None = None):
        self.url = url
        self.container = open_input(url, options)
        self.video = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.audio = list(self.container.streams.audio)
        codec = self.video.codec_context
        if codec is None or codec.name is None:
            self.container.close()
            raise InputError(f"unsupported video codec in {url}")
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(25)
        self.rate = Fraction(rate)
        self.time_base = self.video.time_base or 1 / self.rate
        self.frame_count = self.video.frames or None
        self.times = PresentationTimes(round(1 / (self.rate * self.time_base)))
        self._frames = self._decode()
        try:
            self.first = next(self._frames)
        except BaseException:
            self.container.close()
            raise
        self.height, self.width = self.first.image.shape[:2]

    def __iter__(self) -> Iterator[Frame]:
        return itertools.chain([self.first], self._frames)

    def _decode(self) -> Iterator[Frame]:
        streams = [self.video, *self.audio]
        early_packets: list[av.Packet] = []  # audio before the first video frame
        ahead: deque[tuple[av.VideoFrame, list]] = deque()  # decoded frames, each with the audio read after it
        index = video_packets = 0
        try:
            for packet in self.container.demux(streams):
                if packet.stream is not self.video:
                    if packet.dts is not None:  # a flush packet carries nothing to copy
                        (ahead[-1][1] if ahead else early_packets).append(packet)
                    continue
                video_packets += packet.size > 0
                for decoded in packet.decode():
                    self.times.seen(decoded.pts, decoded.dts)
                    ahead.append((decoded, early_packets if index == 0 and not ahead else []))
                    if len(ahead) > LOOKAHEAD:
                        yield self._frame(*ahead.popleft(), index)
                        index += 1
        except av.FFmpegError as error:
            raise InputError(f"corrupt or truncated stream in {self.url}: {reason(error)}") from None
        if not ahead and index == 0:
            raise InputError(f"no decodable video frame in {self.url}")
        while ahead:
            yield self._frame(*ahead.popleft(), index)
            index += 1
        # Packets, not decoded frames: an edit list may legitimately hide decoded frames.
        if self.frame_count and video_packets < self.frame_count:
            raise InputError(f"truncated stream in {self.url}: {self.frame_count} frames declared, {video_packets} found")

    def _frame(self, decoded: av.VideoFrame, audio: list, index: int) -> Frame:
        pts = self.times.timed(decoded.pts, decoded.dts)
        image = upright(decoded.to_ndarray(format="bgr24"), decoded.rotation)
        return Frame(image=image, pts=pts, time_base=self.time_base, index=index, audio=tuple(audio))

    def close(self) -> None:
        self.container.close()
