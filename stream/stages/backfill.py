"""Backfill: mask a new face in the frames just before its first detection.

A face that walks in from the edge, or turns towards the camera, is often found a
frame or two after it became recognisable. For files (and live runs that can afford
a short delay) this stage holds the last few frames back; when a track is born, its
box, grown for the motion it may have made, is added to the held frames too.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from veil.errors import InputError
from veil.stream.elements import Stage
from veil.stream.faces import Faces
from veil.stream.frame import Frame


class BackfillStage(Stage):
    name = "backfill"

    def __init__(self, frames: int, growth_per_frame: float = 0.1):
        if frames < 0:
            raise InputError(f"backfill must not be negative, got {frames} frames")
        self.frames, self.growth = frames, growth_per_frame
        self.held: deque[Frame] = deque()
        self.newest_id = -1  # the tracker's ids only increase, so "new" is "above this"

    def process(self, frame: Frame) -> list[Frame]:
        tracks = frame.tracks
        if tracks is not None and len(tracks):
            born = tracks[tracks.track_ids > self.newest_id]
            self.newest_id = max(self.newest_id, int(tracks.track_ids.max()))
            for age in range(1, len(self.held) + 1 if len(born) else 1):
                self.held[-age] = self._with(self.held[-age], born, age)
        self.held.append(frame)
        released = []
        while len(self.held) > self.frames:
            released.append(self.held.popleft())
        return released

    def _with(self, held: Frame, born: Faces, age: int) -> Frame:
        """``held`` with the newborn faces added, grown for ``age`` frames of motion."""
        boxes = born.boxes.copy()
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        pad = (size * self.growth * age)[:, None]
        boxes[:, :2] -= pad
        boxes[:, 2:] += pad
        extra = Faces.from_boxes(boxes, scores=born.scores, track_ids=born.track_ids, detected=np.zeros(len(born), bool))
        base = held.tracks if held.tracks is not None else Faces.empty()
        return held.replace(tracks=Faces.concat([base, extra]).clipped(held.width, held.height))

    def flush(self) -> list[Frame]:
        released = list(self.held)
        self.held.clear()
        return released
