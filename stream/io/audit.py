"""The audit log's file. It is an output like the video: written as a partial file
(veil.stream.io.partial) and named only when the run's output is, kept partial beside a kept
partial video, removed with a removed one. A path that is not a regular file
(``/dev/stdout``, a pipe) is written as it is."""

from __future__ import annotations

import json
from pathlib import Path

from veil.errors import OutputError, reason
from veil.stream.io.partial import PartialFile


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
