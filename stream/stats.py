"""Per-stage latency collection, printed at the end of every run."""

from __future__ import annotations

import random
import threading

import numpy as np

RESERVOIR = 20_000


class LatencyLog:
    """Seconds per call, per stage name, in the order stages first report.

    Memory stays flat on a run of any length: past ``RESERVOIR`` samples a stage
    keeps a uniform random sample of all its calls (reservoir sampling), so the
    percentiles still describe the whole run.
    """

    def __init__(self):
        self._samples: dict[str, list[float]] = {}
        self._calls: dict[str, int] = {}
        self._totals: dict[str, float] = {}
        self._lock = threading.Lock()
        self._random = random.Random(0)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            samples = self._samples.setdefault(name, [])
            calls = self._calls[name] = self._calls.get(name, 0) + 1
            self._totals[name] = self._totals.get(name, 0.0) + seconds
            if len(samples) < RESERVOIR:
                samples.append(seconds)
            else:
                slot = self._random.randrange(calls)
                if slot < RESERVOIR:
                    samples[slot] = seconds

    def percentiles_ms(self) -> dict[str, tuple[int, float, float]]:
        """name -> (calls, p50 ms, p99 ms)."""
        with self._lock:
            items = [(name, self._calls[name], np.asarray(values)) for name, values in self._samples.items()]
        return {
            name: (calls, float(np.percentile(v, 50) * 1e3), float(np.percentile(v, 99) * 1e3))
            for name, calls, v in items
            if len(v)
        }

    def total_s(self, name: str) -> float:
        """Seconds all of a stage's calls took together (a Prometheus summary's sum)."""
        with self._lock:
            return self._totals.get(name, 0.0)

    def table(self) -> str:
        rows = [f"{'stage':<12} {'calls':>7} {'p50 ms':>8} {'p99 ms':>8}"]
        for name, (calls, p50, p99) in self.percentiles_ms().items():
            rows.append(f"{name:<12} {calls:>7} {p50:>8.1f} {p99:>8.1f}")
        return "\n".join(rows)
