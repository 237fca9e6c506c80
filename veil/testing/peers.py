"""A WebRTC camera stand-in for the tests and the WebRTC benchmark."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc import VideoStreamTrack

from veil.stream.io.live import CLOCK


class LoopedClip(VideoStreamTrack):
    """Plays ``images`` in a loop in real time at ``fps``; ``stamp(image, number)``
    marks each frame (with ``veil.testing.timecode``) as it leaves."""

    def __init__(self, images: list[np.ndarray], fps: float, stamp: Callable[[np.ndarray, int], object]):
        super().__init__()
        self.images, self.fps, self.stamp = images, fps, stamp
        self.sent = 0
        self._start: float | None = None

    def picture(self, number: int) -> np.ndarray:
        """Frame ``number`` as sent."""
        image = self.images[number % len(self.images)].copy()
        self.stamp(image, number)
        return image

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.sent / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(self.picture(self.sent), format="bgr24")
        frame.pts, frame.time_base = round(self.sent / self.fps / CLOCK), CLOCK
        self.sent += 1
        return frame
