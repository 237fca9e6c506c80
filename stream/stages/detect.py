"""Detection, on every frame or every few."""

from __future__ import annotations

from veil.errors import InputError
from veil.stream.detectors import Detector
from veil.stream.elements import Stage
from veil.stream.frame import Frame


class DetectStage(Stage):
    """Runs the detector on every ``every``-th frame, and on the last frame, so that a face
    that appears after the last scheduled detection is still found (backfill then masks it
    on the frames before); the tracker predicts the rest. With ``every`` > 1 each frame
    between detections is held until the next one arrives: it may be the last."""

    name = "detect"

    def __init__(self, detector: Detector, every: int = 1):
        if every < 1:
            raise InputError(f"detection interval must be at least 1 frame, got {every}")
        self.detector, self.every = detector, every
        self._held: Frame | None = None

    def process(self, frame: Frame) -> list[Frame]:
        released = [] if self._held is None else [self._held]
        self._held = None
        if frame.index % self.every == 0:
            released.append(self._detected(frame))
        else:
            self._held = frame
        return released

    def flush(self) -> list[Frame]:
        held, self._held = self._held, None
        return [] if held is None else [self._detected(held)]

    def _detected(self, frame: Frame) -> Frame:
        return frame.replace(detections=self.detector.detect(frame.image))
