"""Veil's exceptions.

Each one also inherits the matching built-in, so callers that already catch
``ValueError`` or ``OSError`` keep working (PyAV does the same with FFmpeg errors).
"""


class VeilError(Exception):
    """Base of every error Veil raises on purpose."""


class InputError(VeilError, ValueError):
    """The input cannot be read: missing, not media, corrupt, unsupported."""


class OutputError(VeilError, OSError):
    """The output cannot be written."""


class StageError(VeilError, RuntimeError):
    """A pipeline stage failed or timed out on a frame."""


class MissingDependency(VeilError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


def reason(error: BaseException) -> str:
    """An error's own words for a one-line message: the OS's text when it has one
    ("No such file or directory"), not the errno-and-path repr."""
    return getattr(error, "strerror", None) or str(error)
