"""The pipeline's stages: detect, track, anonymise. Each is synchronous; the graph
runtime gives each its own thread."""

from __future__ import annotations

from stream.anonymise import Anonymiser
from stream.detectors import Detector
from stream.errors import InputError
from stream.frame import Frame
from stream.tracker import Tracker


class DetectStage:
    """Runs the detector on every ``every``-th frame; the tracker predicts the rest."""

    name = "detect"

    def __init__(self, detector: Detector, every: int = 1):
        if every < 1:
            raise InputError(f"--detect-every must be at least 1, got {every}")
        self.detector, self.every = detector, every

    def process(self, frame: Frame) -> Frame:
        if frame.index % self.every:
            return frame
        return frame.replace(detections=self.detector.detect(frame.image))


class TrackStage:
    name = "track"

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def process(self, frame: Frame) -> Frame:
        return frame.replace(tracks=self.tracker.update(frame.detections, frame.width, frame.height))


class AnonymiseStage:
    """Obscures every tracked face (or, with no tracker, every detection)."""

    name = "anonymise"

    def __init__(self, anonymiser: Anonymiser):
        self.anonymiser = anonymiser

    def process(self, frame: Frame) -> Frame:
        faces = frame.faces_to_mask
        if faces is None:
            raise RuntimeError(f"frame {frame.index} reached anonymise with no detections or tracks")
        return frame.replace(image=self.anonymiser.apply(frame.image, faces))
