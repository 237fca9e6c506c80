"""The audit stage: one JSON line per frame saying what was masked and why
(veil.stream.io.audit writes them)."""

from __future__ import annotations

from veil.stream.elements import Stage
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.io.audit import AuditLog


def record(index: int, pts: int, time: float, faces: Faces | None, file: str | None = None, *,
           kept: Faces | None = None, decisions: dict | None = None) -> dict:  # fmt: skip
    """One frame's line: where each face was masked, its track, score and what found it;
    with a selection (--keep, --only), also the faces left visible, and why for each."""
    line = {"file": file} if file is not None else {}
    line.update(frame=index, pts=pts, time=round(time, 6))
    line["faces"] = None if faces is None else _faces(faces, decisions or {})
    if kept is not None:
        line["kept"] = _faces(kept, decisions or {})
    return line


def _faces(faces: Faces, decisions: dict) -> list[dict]:
    found = [
        {
            "box": [round(float(v), 1) for v in faces.boxes[i]],
            "track": int(faces.track_ids[i]),
            "score": round(float(faces.scores[i]), 4),
            "source": "detection" if faces.detected[i] else "tracker",
        }
        for i in range(len(faces))
    ]
    for face in found:
        if face["track"] in decisions:
            face["decision"] = decisions[face["track"]]
    return found


class AuditStage(Stage):
    """Writes the faces each frame will be anonymised with; placed after tracking.
    ``file`` names the input in every line (folder runs share one log)."""

    name = "audit"

    def __init__(self, log: AuditLog, file: str | None = None):
        self.log, self.file = log, file

    def process(self, frame: Frame) -> Frame:
        self.log.write(record(frame.index, frame.pts, frame.time, frame.faces_to_mask, self.file, kept=frame.kept, decisions=frame.decisions))
        return frame
