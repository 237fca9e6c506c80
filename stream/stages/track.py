"""Tracking: the faces to mask on each frame, detected or predicted."""

from __future__ import annotations

from veil.stream.elements import Stage
from veil.stream.frame import Frame
from veil.stream.tracker import Tracker


class TrackStage(Stage):
    """Every detection, and every lost face still coasting (veil.stream.tracker)."""

    name = "track"

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def process(self, frame: Frame) -> Frame:
        return frame.replace(tracks=self.tracker.update(frame.detections, frame.width, frame.height))
