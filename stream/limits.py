"""The valid range of every numeric setting, checked before any file is opened.

Each range is where Veil's output is still what it promises: outside it a value is either
meaningless (NaN, infinity, a negative time) or would let the independent privacy gate see
a face (a strength too weak to hide one, a detector threshold that misses faces). The
library's messages name the setting; the command line adds its flag.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from veil.errors import InputError

# Strength is relative to the face (veil.stream.anonymisers.classic: cells across the face = CELLS / strength).
# 1 is the weakest setting at which neither the recogniser nor the gate saw through blur or
# pixelation on any of 430 faces 32 to 112 px high (benchmarks/STRENGTH.md); pixelation at
# 1.5 times as many cells was already found again on small faces.
STRENGTH_FLOOR = 1.0


@dataclass(frozen=True)
class Limit:
    """A closed range [low, high] for one setting, in ``unit``; ``why`` says what lies outside."""

    what: str
    low: float
    high: float
    unit: str = ""
    integer: bool = False
    why: str = ""

    def check(self, value) -> float | int:
        """``value`` as a number in range, or InputError saying what the range is."""
        number = _number(value)
        if number is None or (self.integer and number != int(number)) or not self.low <= number <= self.high:
            raise InputError(f"{self.what} {self.rule()}, got {_shown(value)}")
        return int(number) if self.integer else number

    def rule(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        kind = "a whole number" if self.integer else "a number"
        text = f"must be {kind} from {self.low:g} to {self.high:g}{unit}"
        return f"{text} ({self.why})" if self.why else text


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _shown(value) -> str:
    return repr(value) if not isinstance(value, float) else f"{value:g}"


LIMITS = {
    "strength": Limit("strength", STRENGTH_FLOOR, 100, why=f"below {STRENGTH_FLOOR:g} blur and pixelation were seen through: benchmarks/STRENGTH.md"),
    "margin": Limit("margin", 0, 5, "face sizes per side"),
    "threshold": Limit("detector score threshold", 0.05, 0.5,
                       why="below 0.05 nearly everything is a face; above 0.5 real faces were missed"),
    "match_threshold": Limit("match threshold", 0.1, 0.9, "(SFace cosine)",
                             why="below 0.1 strangers match; above 0.9 nobody matches even their own photo"),
    "detect_size": Limit("detector input size", 64, 4096, "px", integer=True),
    "detect_every": Limit("detection interval", 1, 10, "frames", integer=True),
    "keyframe_every": Limit("keyframe interval", 1, 1000, "frames", integer=True),
    "coast_s": Limit("coasting time", 0, 60, "s"),
    "tentative_coast_s": Limit("coasting time of an unconfirmed face", 0, 60, "s"),
    "backfill_s": Limit("backfill", 0, 2, "s", why="it holds that many seconds of frames in memory"),
    "stage_timeout": Limit("stage timeout", 1, 86400, "s"),
    "target_delay_ms": Limit("target delay", 0, 10000, "ms"),
    "reconnect_s": Limit("reconnect time", 1, 86400, "s"),
    "camera_fps": Limit("camera frame rate", 1, 240, "fps"),
    "port": Limit("port", 0, 65535, integer=True),
}
