"""Video sources: anything FFmpeg opens (files, URLs, image sequences), through PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from stream.errors import InputError, reason
from stream.frame import Frame


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


class VideoSource:
    """Decodes the first video stream to upright BGR frames, with their original pts.

    Packets of the audio streams are carried on the next frame that leaves the
    source (see ``Frame.audio``), so a sink can stream-copy them in sync.
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

    def __iter__(self) -> Iterator[Frame]:
        streams = [self.video, *self.audio]
        pending_packets: list[av.Packet] = []
        held: Frame | None = None
        index = video_packets = 0
        try:
            for packet in self.container.demux(streams):
                if packet.stream is not self.video:
                    if packet.dts is not None:  # a flush packet carries nothing to copy
                        pending_packets.append(packet)
                    continue
                video_packets += packet.size > 0
                for decoded in packet.decode():
                    if held is not None:
                        yield held.replace(audio=tuple(pending_packets))
                        pending_packets = []
                    held = self._frame(decoded, index)
                    index += 1
        except av.FFmpegError as error:
            raise InputError(f"corrupt or truncated stream in {self.url}: {reason(error)}") from None
        if held is None:
            raise InputError(f"no decodable video frame in {self.url}")
        yield held.replace(audio=tuple(pending_packets))
        # Packets, not decoded frames: an edit list may legitimately hide decoded frames.
        if self.frame_count and video_packets < self.frame_count:
            raise InputError(f"truncated stream in {self.url}: {self.frame_count} frames declared, {video_packets} found")

    def _frame(self, decoded: av.VideoFrame, index: int) -> Frame:
        pts = decoded.pts
        if pts is None:  # raw elementary streams carry no timestamps: count frames
            pts = round(index / self.rate / self.time_base)
        image = upright(decoded.to_ndarray(format="bgr24"), decoded.rotation)
        return Frame(image=image, pts=pts, time_base=self.time_base, index=index)

    def close(self) -> None:
        self.container.close()
