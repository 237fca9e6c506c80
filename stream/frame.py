"""The frame type that flows through the stage graph."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from veil.stream.faces import Faces

LAYOUTS = ("bgr", "i420")
PLACES = ("host", "device")


@dataclass(frozen=True)
class Frame:
    """One decoded picture and what the stages learned about it.

    image: the picture, upright (rotation metadata applied), in ``layout`` at ``place``:
      "bgr": HxWx3 uint8 in OpenCV's order; "i420": the (H*3/2)xW planes of YUV 4:2:0 that
      encoders take (the GPU path hands those over). "host": a numpy array; "device": a
      torch tensor (the GPU path, veil.stream.gpu). Checked on every construction.
    pts: presentation time in ``time_base`` units, exactly as decoded; never re-timed.
    index: position in the source, from 0.
    detections: this frame's detector output (None where the detector did not run).
    tracks: the faces to mask: detections plus the tracker's coasting predictions.
    kept: the tracked faces left visible on purpose (``--keep``/``--only``, veil.stream.stages.select);
      None when no selection ran. decisions: why each of them was masked or shown, by track
      id (for the audit log).
    audio: the audio that the source read since the previous video frame; the sink
      writes it after this frame, so sound travels in order and in sync without a
      side channel. File sources carry compressed ``av.Packet``s (stream-copied);
      live sources carry decoded ``av.AudioFrame``s on the capture clock (re-encoded).
    captured: ``time.monotonic()`` when a live source received the frame (None for
      files); capture-to-output latency and ``--target-delay`` count from it.
    failure: the exception a stage raised on this frame; such a frame is covered
      whole by the fallback before it may reach a sink.
    """

    image: np.ndarray
    pts: int
    time_base: Fraction
    index: int
    detections: Faces | None = None
    tracks: Faces | None = None
    kept: Faces | None = None
    decisions: dict = field(default_factory=dict)
    audio: tuple = field(default=(), repr=False)
    captured: float | None = None
    failure: BaseException | None = None
    layout: str = "bgr"
    place: str = "host"

    def __post_init__(self):
        if self.layout not in LAYOUTS or self.place not in PLACES:
            raise ValueError(f"a frame's layout is one of {LAYOUTS} and its place one of {PLACES}, got {self.layout!r}, {self.place!r}")
        on_host = isinstance(self.image, np.ndarray)
        if on_host != (self.place == "host"):
            raise ValueError(f"a {self.place} frame's image is a {'numpy array' if self.place == 'host' else 'torch tensor'}, got {type(self.image).__name__}")
        shape = tuple(self.image.shape)
        if (self.layout == "bgr") != (len(shape) == 3 and shape[2] == 3) or (self.layout == "i420" and len(shape) != 2):
            raise ValueError(f"a {self.layout} frame's image is {'HxWx3' if self.layout == 'bgr' else '(H*3/2)xW'}, got shape {shape}")

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def faces_to_mask(self) -> Faces | None:
        """The tracks once a tracker ran, else the detections; None if neither ran."""
        return self.tracks if self.tracks is not None else self.detections

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0] if self.layout == "bgr" else self.image.shape[0] * 2 // 3

    def replace(self, **changes) -> Frame:
        """A copy with some fields changed; timestamps ride along untouched."""
        return dataclasses.replace(self, **changes)
