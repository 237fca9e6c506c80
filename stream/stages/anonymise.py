"""Anonymising: every face the tracker says is there is hidden."""

from __future__ import annotations

from veil.stream.elements import Stage
from veil.stream.frame import Frame


class AnonymiseStage(Stage):
    """Obscures every tracked face (or, with no tracker, every detection)."""

    name = "anonymise"

    def __init__(self, anonymiser):
        """``anonymiser``: anything with ``apply(image, faces) -> image`` (veil.stream.anonymisers)."""
        self.anonymiser = anonymiser

    def process(self, frame: Frame) -> Frame:
        faces = frame.faces_to_mask
        if faces is None:
            raise RuntimeError(f"frame {frame.index} reached anonymise with no detections or tracks")
        return frame.replace(image=self.anonymiser.apply(frame.image, faces))
