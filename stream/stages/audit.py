"""The audit log: one JSON line per frame saying what was masked and why.

It is an output like the video: written as a partial file (``veil.stream.io.partial``) and named
only when the run's output is, kept partial beside a kept partial video, removed with a
removed one. A path that is not a regular file (``/dev/stdout``, a pipe) is written as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from veil.errors import OutputError, reason
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.io.partial import PartialFile


def record(index: int, pts: int, time: float, faces: Faces | None, file: str | None = None) -> dict:
    """One frame's line: where each face was masked, its track, score and what found it."""
    line = {"file": file} if file is not None else {}
    line.update(frame=index, pts=pts, time=round(time, 6))
    line["faces"] = None if faces is None else [
        {
            "box": [round(float(v), 1) for v in faces.boxes[i]],
            "track": int(faces.track_ids[i]),
            "score": round(float(faces.scores[i]), 4),
            "source": "detection" if faces.detected[i] else "tracker",
        }
        for i in range(len(faces))
    ]
    return line


class AuditLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        special = self.path.exists() and not self.path.is_file()
        self.file = None if special else PartialFile(self.path)
        self._stream = None
        try:
            self._stream = open(self.path if special else self.file.partial, "w", encoding="utf-8")
        except OSError as error:
            self.abort()
            raise OutputError(f"cannot write audit log {self.path}: {reason(error)}") from None

    def write(self, line: dict) -> None:
        try:
            self._stream.write(json.dumps(line) + "\n")
        except OSError as error:  # a full disk
            raise OutputError(f"cannot write audit log {self.path}: {reason(error)}") from None

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.close()  # the last lines reach the disk here
        except OSError as error:
            raise OutputError(f"cannot write audit log {self.path}: {reason(error)}") from None

    def commit(self) -> None:
        self.close()
        if self.file is not None:
            self.file.commit()

    def keep(self) -> None:
        """Beside a kept partial video: partial too, with the lines of the frames written."""
        self._close_quietly()
        if self.file is not None:
            self.file.keep()

    def abort(self) -> None:
        self._close_quietly()
        if self.file is not None:
            self.file.abort()

    def _close_quietly(self) -> None:
        try:
            self.close()
        except OutputError:
            pass  # the log is being given up anyway


class AuditStage:
    """Writes the faces each frame will be anonymised with; placed after tracking.
    ``file`` names the input in every line (folder runs share one log)."""

    name = "audit"

    def __init__(self, log: AuditLog, file: str | None = None):
        self.log, self.file = log, file

    def process(self, frame: Frame) -> Frame:
        self.log.write(record(frame.index, frame.pts, frame.time, frame.faces_to_mask, self.file))
        return frame
