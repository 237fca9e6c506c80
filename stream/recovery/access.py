"""The access log beside a sidecar (``OUT.veilrec.access.jsonl``): one JSON line per look
at the originals (a listing, a recovery), appended, never rewritten. Each line carries the
SHA-256 of the line before it and its own, so an edited, removed or reordered line breaks
the chain and ``veil recover --verify-log`` says where. (A chain cannot show lines cut off
its end; keep a copy of the last hash elsewhere, e.g. in the request's case file.)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from veil.errors import InputError, OutputError, reason

START = "0" * 64


def log_path(sidecar: str | Path) -> Path:
    return Path(f"{sidecar}.access.jsonl")


def _digest(entry: dict) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _lines(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except OSError as error:
        raise InputError(f"cannot read access log {path}: {reason(error)}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise InputError(f"access log {path}: line {number} is not a record (edited?)") from None
    return entries


def verify(path: str | Path) -> int:
    """The number of records, after checking the chain; an InputError names the first break."""
    return len(_checked(Path(path)))


def _checked(path: Path) -> list[dict]:
    """The log's records, each shown to follow the one before and to be as it was written."""
    previous, entries = START, _lines(path)
    for number, entry in enumerate(entries, 1):
        if entry.get("previous") != previous:
            raise InputError(f"access log {path}: line {number} does not follow line {number - 1} (a line was removed or moved)")
        previous = entry.get("hash")
        if previous != _digest({key: value for key, value in entry.items() if key != "hash"}):
            raise InputError(f"access log {path}: line {number} was changed after it was written")
    return entries


def append(path: str | Path, record: dict) -> dict:
    """Add ``record`` (with the time and the chain) at the end; the log is checked first."""
    path = Path(path)
    entries = _checked(path)
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record, "previous": entries[-1]["hash"] if entries else START}
    entry["hash"] = _digest(entry)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry, sort_keys=True) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        raise OutputError(f"cannot write access log {path}: {reason(error)}") from None
    return entry
