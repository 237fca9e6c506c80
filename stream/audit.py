"""The audit log: one JSON line per frame saying what was masked and why."""

from __future__ import annotations

import json
from pathlib import Path

from stream.errors import OutputError
from stream.frame import Frame


class AuditStage:
    """Writes the faces each frame will be anonymised with; placed after tracking."""

    name = "audit"

    def __init__(self, path: str | Path):
        try:
            self.file = open(path, "w", encoding="utf-8")
        except OSError as error:
            raise OutputError(f"cannot write audit log {path}: {error.strerror}") from None

    def process(self, frame: Frame) -> Frame:
        faces = frame.faces_to_mask
        record = {
            "frame": frame.index,
            "pts": frame.pts,
            "time": round(frame.time, 6),
            "faces": [
                {
                    "box": [round(float(v), 1) for v in faces.boxes[i]],
                    "track": int(faces.track_ids[i]),
                    "score": round(float(faces.scores[i]), 4),
                    "source": "detection" if faces.detected[i] else "tracker",
                }
                for i in range(len(faces))
            ]
            if faces is not None
            else None,
        }
        self.file.write(json.dumps(record) + "\n")
        return frame

    def close(self) -> None:
        self.file.close()
