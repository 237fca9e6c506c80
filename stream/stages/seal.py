"""The seal stage: before a frame is anonymised, the original pixels of every region the
anonymiser will change go into the recovery sidecar (veil.stream.recovery), per track.

A region is the whole reach of the face's mask: for blur, pixelate and solid the grown,
feathered box; for synth also the box its generated face is pasted into (and the fallback's,
in case the face is pixelated instead). Restoring one track then never needs a pixel the
sidecar does not hold, and never writes one that belongs to another track's mask.
"""

from __future__ import annotations

import numpy as np

from veil.engines import align
from veil.kernels.composite import paste_box
from veil.stream.anonymisers.classic import Anonymiser, host_bgr
from veil.stream.elements import Stage
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.io.segments import SegmentSeals
from veil.stream.recovery.sidecar import SidecarWriter


def reach(anonymiser, faces: Faces, index: int, height: int, width: int) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) of the pixels ``anonymiser`` may change for one face."""
    classic = anonymiser if isinstance(anonymiser, Anonymiser) else anonymiser.fallback
    found = classic.region(faces.boxes[index], height, width, faces.mesh[index])
    boxes = [] if found is None else [(found.left, found.top, found.right, found.bottom)]
    if not isinstance(anonymiser, Anonymiser) and not np.isnan(faces.landmarks[index]).any():
        matrix = align.similarity(faces.landmarks[index])
        pasted = None if matrix is None else paste_box(matrix, height, width)
        boxes += [pasted] if pasted is not None else []
    if not boxes:
        return None
    corners = np.array(boxes)
    return int(corners[:, 0].min()), int(corners[:, 1].min()), int(corners[:, 2].max()), int(corners[:, 3].max())


class SealStage(Stage):
    """Seals each masked region of each frame with ``writer``; placed just before anonymising.
    ``anonymiser``: the run's (its reach decides each region)."""

    name = "seal"

    def __init__(self, writer: SidecarWriter | SegmentSeals, anonymiser):
        self.writer, self.anonymiser = writer, anonymiser

    def process(self, frame: Frame) -> Frame:
        writer = self.writer.at(frame)
        faces = frame.faces_to_mask
        if faces is not None and len(faces):
            image = host_bgr(frame)  # the frame itself on the host; the GPU path's copied down
            height, width = image.shape[:2]
            for i in range(len(faces)):
                rect = reach(self.anonymiser, faces, i, height, width)
                if rect is not None:
                    left, top, right, bottom = rect
                    writer.add(frame.index, frame.pts, int(faces.track_ids[i]), rect, image[top:bottom, left:right])
        writer.end_frame()
        return frame
