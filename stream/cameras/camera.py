"""One camera of a site, run until stopped: pulled, anonymised, restreamed and recorded, and
brought back with backoff whenever its source fails, ends or cannot be reached.

Within a connection the live source covers the picture while the camera is away (see
``veil.stream.io.live``); past its reconnect time the run ends and this loop starts a new one,
so a camera never stops for good and never holds the others up: each has its own threads,
tracker and cover, and shares only the detector (whose calls it joins, never waits on).
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from veil.errors import VeilError
from veil.stream.cameras.site import CameraSpec
from veil.stream.detectors import Detector
from veil.stream.frame import Frame
from veil.stream.io.live import CLOCK, is_live_url, without_password
from veil.stream.io.segments import SegmentedRecorder, SegmentPlan, SegmentSeals
from veil.stream.io.tee import Tee
from veil.stream.jobs.live import open_live_sink, open_live_source
from veil.stream.options import Options
from veil.stream.pipeline import Pipeline

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
RATE_WINDOW_S = 5.0  # fps in the status: over this much of the recent past
THUMBNAIL_WIDTH = 320
THUMBNAIL_EVERY_S = 1.0


class Camera:
    """``start()`` runs the camera in its own thread; ``status()`` and ``thumbnail()`` may be
    called from any thread; ``stop()`` asks it to finish its outputs (the recording's last
    segment is named), ``join()`` waits until it has."""

    def __init__(self, spec: CameraSpec, options: Options, detector: Detector, *, log: Callable[[str], None] = print):
        self.spec, self.options, self.detector = spec, options, detector
        self.log = lambda line: log(line.replace("veil: ", f"veil: {spec.name}: ", 1))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._source = None
        self._report = None
        self._recorder: SegmentedRecorder | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.restarts = 0  # runs started again after the last one ended or failed
        self._done = collections.Counter()  # totals of the runs that ended
        self._rates = collections.deque()  # (time, frames in, frames out), for fps
        self._shown: Frame | None = None  # the last frame written, anonymised
        self._shown_at = 0.0
        self._faces = 0

    # --- control ------------------------------------------------------------
    def start(self) -> Camera:
        self._thread = threading.Thread(target=self._run, name=f"veil-camera-{self.spec.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            source = self._source
        if source is not None:
            source.end()

    def join(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        retry = FIRST_RETRY_S
        while not self._stop.is_set():
            try:
                self._connect_and_run()
                why = "its source ended" if not is_live_url(self.spec.source) else "its stream ended"
            except VeilError as error:
                why = str(error)
                self.last_error = why
            except Exception as error:  # noqa: BLE001 - one camera's fault must not end the others
                why = f"{type(error).__name__}: {error}"
                self.last_error = why
            if self._stop.is_set():
                break
            if self.state == "live":
                retry = FIRST_RETRY_S  # it was up: this is a new failure, not the same one again
            self.state = "down"
            self.restarts += 1
            self.log(f"veil: stopped ({why}); starting again in {retry:g} s")
            self._stop.wait(retry)
            retry = min(retry * 2, MAX_RETRY_S)
        self.state = "stopped"

    def _connect_and_run(self) -> None:
        self.state = "connecting"
        with open_live_source(self.spec.source, self.options, log=self.log) as source:
            sinks = []
            try:
                for url in self.spec.outputs:
                    sinks.append(open_live_sink(url, source, self.options, log=self.log))
                record, seals = self.spec.record, None
                if record is not None:
                    plan = SegmentPlan(self.spec.name, record)
                    if record.recovery_keys:
                        seals = SegmentSeals(plan, self.options, width=source.width, height=source.height, rate=source.rate,
                                             time_base=CLOCK, source=without_password(source.url))  # fmt: skip
                    self._recorder = SegmentedRecorder(
                        self.spec.name, record, width=source.width, height=source.height, rate=source.rate,
                        time_base=CLOCK, audio=source.has_audio, log=self.log, options=self.options, plan=plan, seals=seals,
                    )  # fmt: skip
                    sinks.append(self._recorder)
            except BaseException:
                Tee(sinks).abort() if sinks else None
                raise
            with self._lock:
                self._source = source
                self._rates.clear()  # a new run counts its frames from 0
            if self._stop.is_set():
                source.end()
            self.state = "live"
            self.log(f"veil: live: {self.spec.source} ({source.width}x{source.height}, {float(source.rate):g} fps)")
            try:
                Pipeline(self.options, detector=self.detector).run(source, Tee(sinks), log=self.log, on_frame=self._on_frame, seal=seals)
            finally:
                with self._lock:
                    self._source = None
                    report, self._report = self._report, None
                    if report is not None:
                        self._done.update(self._counts(report, source))

    # --- figures ------------------------------------------------------------
    def _on_frame(self, frame: Frame, report) -> None:
        now = time.monotonic()
        with self._lock:
            self._report = report
            self._faces = 0 if frame.faces_to_mask is None else len(frame.faces_to_mask)
            if now - self._shown_at >= THUMBNAIL_EVERY_S:
                self._shown, self._shown_at = frame, now
            source = self._source
            if source is not None and (not self._rates or now - self._rates[-1][0] >= 0.5):
                self._rates.append((now, source.received, report.frames))
                while now - self._rates[0][0] > RATE_WINDOW_S:
                    self._rates.popleft()

    @staticmethod
    def _counts(report, source) -> dict:
        return {"frames_in": source.received, "frames_out": report.frames, "dropped": source.dropped,
                "covered": report.failed_frames, "reconnects": source.reconnections}

    def status(self) -> dict:
        """What the status page and /metrics show: state, fps, latency, counts (all runs)."""
        with self._lock:
            report, source = self._report, self._source
            totals = collections.Counter(self._done)
            if report is not None and source is not None:
                totals.update(self._counts(report, source))
            rates = list(self._rates)
            latency = None if report is None else report.latency.percentiles_ms().get("capture→out")
            latency_sum = 0.0 if report is None else report.latency.total_s("capture→out")
            lost = source is None or source.is_lost()
            recording = None if self._recorder is None or self._recorder.path is None else self._recorder.path.name
        fps_in = fps_out = 0.0
        if len(rates) >= 2 and not lost:
            seconds = rates[-1][0] - rates[0][0]
            fps_in, fps_out = ((rates[-1][i] - rates[0][i]) / seconds for i in (1, 2))
        return {
            "name": self.spec.name, "source": without_password(self.spec.source),
            "state": "lost" if self.state == "live" and lost else self.state,
            "connected": self.state == "live" and not lost,
            "fps_in": round(fps_in, 2), "fps_out": round(fps_out, 2),
            "latency_p50_ms": None if latency is None else round(latency[1], 1),
            "latency_p99_ms": None if latency is None else round(latency[2], 1),
            "latency_count": 0 if latency is None else latency[0], "latency_sum_s": latency_sum,
            "frames_in": totals["frames_in"], "frames_out": totals["frames_out"], "dropped": totals["dropped"],
            "covered": totals["covered"], "faces": self._faces, "reconnects": totals["reconnects"] + self.restarts,
            "last_error": self.last_error, "recording": recording, "node": socket.gethostname(),
        }  # fmt: skip

    def thumbnail(self) -> bytes | None:
        """The last anonymised frame written (covered, if it was), as a small JPEG."""
        with self._lock:
            frame = self._shown
        if frame is None:
            return None
        image = frame.image if frame.layout == "bgr" else cv2.cvtColor(np.ascontiguousarray(frame.image), cv2.COLOR_YUV2BGR_I420)
        height = max(1, round(image.shape[0] * THUMBNAIL_WIDTH / image.shape[1]))
        ok, jpeg = cv2.imencode(".jpg", cv2.resize(image, (THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_AREA))
        return jpeg.tobytes() if ok else None
