"""A millisecond clock burned into the pixels, to measure capture-to-output latency
from outside: the sender stamps each frame, the receiver reads the stamp back after
encoders, servers and networks have had their way with the picture.

The code is 32 big black or white cells in the top-left corner (24 bits of
milliseconds, wrapping every 4.6 hours, and an 8-bit check), large enough to
survive H.264 at streaming bitrates.
"""

from __future__ import annotations

import time

import numpy as np

CELL = 16
COLUMNS, ROWS = 16, 2
BITS = 24
WRAP = 1 << BITS


def now_ms() -> int:
    return int(time.time() * 1000) % WRAP


def _bits(value: int) -> list[int]:
    check = (value ^ (value >> 8) ^ (value >> 16) ^ 0xA5) & 0xFF
    word = (value << 8) | check
    return [(word >> (31 - i)) & 1 for i in range(COLUMNS * ROWS)]


def stamp(image: np.ndarray, value: int | None = None) -> int:
    """Burn ``value`` (default: the clock now) into ``image`` in place; return it."""
    value = now_ms() if value is None else value % WRAP
    for i, bit in enumerate(_bits(value)):
        row, column = divmod(i, COLUMNS)
        image[row * CELL : (row + 1) * CELL, column * CELL : (column + 1) * CELL] = 255 if bit else 0
    return value


def read(image: np.ndarray) -> int | None:
    """The stamped value, or None when the corner holds no valid stamp."""
    if image.shape[0] < ROWS * CELL or image.shape[1] < COLUMNS * CELL:
        return None
    gray = image.mean(axis=2) if image.ndim == 3 else image
    margin = CELL // 4
    word = 0
    for i in range(COLUMNS * ROWS):
        row, column = divmod(i, COLUMNS)
        cell = gray[row * CELL + margin : (row + 1) * CELL - margin, column * CELL + margin : (column + 1) * CELL - margin]
        word = (word << 1) | int(cell.mean() > 127)
    value = word >> 8
    return value if _bits(value) == [(word >> (31 - i)) & 1 for i in range(32)] else None


def age_ms(value: int) -> int:
    """Milliseconds since ``value`` was stamped (same machine's clock)."""
    return (now_ms() - value) % WRAP
