"""Write, then rename: every file Veil writes (video, photo, recording, audit log) is
written as ``NAME.partial.EXT`` and given its real name only once it is complete, so a
run that fails never leaves a file that looks complete.

The partial file is also the run's claim on the output. It is locked (``flock``) for as
long as the run writes it, so a second run on the same output fails at once with a
clear message instead of writing into the same file; a partial file that no process
holds (left by a killed run, or kept after a failure) is simply overwritten. The lock
is advisory and POSIX only: on Windows two runs on one output are not detected.
"""

from __future__ import annotations

import os
from pathlib import Path

from veil.errors import OutputError, reason

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def partial_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class PartialFile:
    """The claim on ``path``: write to ``partial``, then ``commit()``, ``keep()`` or ``abort()``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self._fd = _claim(self.path, self.partial)

    def commit(self) -> Path:
        """Give the finished file its real name (atomically), then let go of the claim."""
        try:
            os.replace(self.partial, self.path)
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {reason(error)}") from None
        finally:
            self._release()
        return self.path

    def keep(self) -> Path:
        """Leave the file under its partial name (frames were written, the run failed)."""
        self._release()
        return self.partial

    def abort(self) -> None:
        """Remove the partial file: nothing in it is worth keeping."""
        if self._fd is not None:
            self.partial.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _claim(path: Path, partial: Path) -> int:
    """An open descriptor of ``partial``, locked by this process, or OutputError."""
    while True:
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o644)  # no O_TRUNC: another run may own it
        except OSError as error:
            raise OutputError(f"cannot write {path}: {reason(error)}") from None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"cannot write {path}: another run is writing it now ({partial.name} is in use)") from None
        # The owner may have renamed or removed the file between our open and our lock:
        # then the lock is on a file no longer called ``partial``, and we try again.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(partial)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
