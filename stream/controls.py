"""What a live graph's user changes while it runs: the mode and strength of the anonymiser,
and whose face is kept (enrolled from the camera itself); and what they see of it: fps,
latency, faces hidden and kept. ``veil serve``'s page drives one per browser camera.

It stands in the graph as two things: the anonymiser (``apply``) and the selection stage
(``select``, keeping nobody until ``change(keep=True)`` enrols the face in front of the camera).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque

import numpy as np

from veil.errors import InputError
from veil.stream.anonymisers import MODES, stream_anonymiser
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.identify.recogniser import Recogniser
from veil.stream.options import Options
from veil.stream.stages.select import SelectStage

WINDOW_S = 2.0  # the readout's fps and latency are over this much of the latest output


class LiveControls:
    def __init__(self, options: Options):
        self.options = options
        self._anonymiser = stream_anonymiser(options, live=True)
        people = options.people()  # veil serve --keep (or --only) gives some from the start
        self.select = SelectStage(options.selection or "keep", people, threshold=options.match_threshold,
                                  recogniser=None if people else Recogniser(options.backend, options.device))  # fmt: skip
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, float | None]] = deque()  # (written at, latency s)
        self.hidden = self.kept = 0

    def apply(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        with self._lock:
            anonymiser = self._anonymiser
        return anonymiser.apply(image, faces)

    def change(self, *, mode: str | None = None, strength: float | None = None, keep: bool | None = None) -> dict:
        """Another mode or strength from the next frame (InputError for one out of range);
        keep=True enrols the face now in front of the camera, keep=False keeps nobody."""
        if mode is not None or strength is not None:
            if mode is not None and mode not in MODES:
                raise InputError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
            options = dataclasses.replace(self.options, mode=mode or self.options.mode,
                                          strength=self.options.strength if strength is None else float(strength))  # fmt: skip
            anonymiser = stream_anonymiser(options, live=True)  # a new generator loads here, not in the graph
            with self._lock:
                self.options, self._anonymiser = options, anonymiser
        if keep is not None and self.select.policy != "keep":
            raise InputError("this server hides only the people given with --only; it keeps no face")
        if keep is True:
            self.select.enrol()
        elif keep is False:
            self.select.forget()
        return self.status()

    def on_frame(self, frame: Frame) -> None:
        """Each frame written (the graph's sink thread)."""
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, None if frame.captured is None else now - frame.captured))
            while self._recent and now - self._recent[0][0] > WINDOW_S:
                self._recent.popleft()
            self.hidden = 0 if frame.tracks is None else len(frame.tracks)
            self.kept = 0 if frame.kept is None else len(frame.kept)

    def status(self) -> dict:
        with self._lock:
            times = [t for t, _ in self._recent]
            latencies = [latency for _, latency in self._recent if latency is not None]
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            return {
                "mode": self.options.mode, "strength": self.options.strength,
                "keeping": "enrolling" if self.select.enrolling else "you" if self.select.people is not None else "nobody",
                "fps": round((len(times) - 1) / span, 1) if span > 0 else 0.0,
                "latency_ms": round(float(np.median(latencies)) * 1000) if latencies else None,
                "hidden": self.hidden, "kept": self.kept,
            }  # fmt: skip
