"""Per-stage latency collection, printed at the end of every run."""

from __future__ import annotations

import threading

import numpy as np


class LatencyLog:
    """Seconds per call, per stage name, in the order stages first report."""

    def __init__(self):
        self._samples: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(name, []).append(seconds)

    def percentiles_ms(self) -> dict[str, tuple[int, float, float]]:
        """name -> (calls, p50 ms, p99 ms)."""
        with self._lock:
            items = [(name, np.asarray(values)) for name, values in self._samples.items()]
        return {
            name: (len(v), float(np.percentile(v, 50) * 1e3), float(np.percentile(v, 99) * 1e3))
            for name, v in items
            if len(v)
        }

    def table(self) -> str:
        rows = [f"{'stage':<12} {'calls':>7} {'p50 ms':>8} {'p99 ms':>8}"]
        for name, (calls, p50, p99) in self.percentiles_ms().items():
            rows.append(f"{name:<12} {calls:>7} {p50:>8.1f} {p99:>8.1f}")
        return "\n".join(rows)
