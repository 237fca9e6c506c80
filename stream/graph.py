"""The stage graph runtime: a source, a chain of stages and a sink, each in its own
thread, joined by bounded queues.

Stages stay synchronous and know nothing about threads. Decode, ONNX Runtime,
OpenCV and encode release the GIL, so one thread per stage lets them overlap.

Fail closed: when a stage raises on a frame, that frame is marked failed, skips the
remaining stages, and is covered whole by ``cover`` before the sink sees it; the
source then stops reading, the frames already in flight finish, and ``run`` raises
the first error. A stage that takes longer than ``stage_timeout`` stops the graph at
once: the stuck frame and those behind it never reach the sink.

Live runs use queues of one frame (the source drops, see ``veil.stream.io.live``), cap the
frames inside the graph (``max_in_flight``: the next frame is taken from the source
only when one has left, so it is the newest there is rather than one that aged in a
queue behind a busy stage), and may set ``target_delay``: each frame is written that long after its capture, no sooner,
so the delay is constant and audio can be delayed to match. Capture-to-output
latency is logged for every frame that carries its capture time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from veil.errors import OutputError, StageError
from veil.stream.elements import Sink, Stage
from veil.stream.frame import Frame
from veil.stream.stats import LatencyLog

_END = object()
_POLL_S = 0.05
JOIN_TIMEOUT_S = 5.0


@dataclass
class RunReport:
    frames: int = 0
    failed_frames: int = 0  # covered whole: a stage failed, or a live source was away
    late_frames: int = 0  # written after their target delay had passed
    wall_s: float = 0.0  # set at the end of the run
    started: float = field(default_factory=time.perf_counter)
    latency: LatencyLog = field(default_factory=LatencyLog)
    transfers: object = None  # the GPU path's host <-> device copies (veil.stream.gpu.Transfers), counted

    @property
    def fps(self) -> float:
        seconds = self.wall_s or time.perf_counter() - self.started
        return self.frames / seconds if seconds > 0 else 0.0


class _Worker:
    """A thread plus what the watchdog needs to see: what it is doing since when.

    Anything the thread's code lets escape halts the whole graph (``on_crash``), so a
    dead thread can never leave the others waiting on its queue.
    """

    def __init__(self, name: str, target: Callable[[], None], on_crash: Callable[[BaseException], None]):
        self.name = name
        self.busy_since: float | None = None
        self.frame_index: int | None = None

        def guarded():
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - reported by run()
                on_crash(error)

        self.thread = threading.Thread(target=guarded, name=f"veil-{name}", daemon=True)

    def timed(self, frame_index: int | None, call: Callable[[], object]):
        self.frame_index, self.busy_since = frame_index, time.monotonic()
        try:
            return call()
        finally:
            self.busy_since = None


class Graph:
    def __init__(
        self,
        source: Iterable[Frame],
        stages: list[Stage],
        sink: Sink,
        *,
        cover: Callable[[Frame], Frame],
        queue_size: int = 4,
        stage_timeout: float = 30.0,
        target_delay: float | None = None,
        max_in_flight: int | None = None,
        on_frame: Callable[[Frame], None] | None = None,
    ):
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if stage_timeout <= 0:
            raise ValueError(f"stage_timeout must be positive, got {stage_timeout}")
        if target_delay is not None and target_delay < 0:
            raise ValueError(f"target_delay must not be negative, got {target_delay}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        for part, kind in ((sink, Sink), *((stage, Stage) for stage in stages)):
            if not isinstance(part, kind):
                raise TypeError(f"{type(part).__name__} is not a veil {kind.__name__}: subclass veil.stream.elements.{kind.__name__}")
        self.target_delay = target_delay
        self._room = threading.Semaphore(max_in_flight) if max_in_flight else None
        self.source, self.stages, self.sink = source, list(stages), sink
        self.cover, self.on_frame = cover, on_frame
        self.stage_timeout = stage_timeout
        self.queues = [queue.Queue(maxsize=queue_size) for _ in range(len(self.stages) + 1)]
        self.report = RunReport()
        self._errors: list[BaseException] = []
        self._errors_lock = threading.Lock()
        self._draining = threading.Event()  # stop reading the source, finish what is in flight
        self._halt = threading.Event()  # stop everything now

    # --- plumbing ---------------------------------------------------------
    def _fail(self, error: BaseException) -> None:
        with self._errors_lock:
            self._errors.append(error)
        self._draining.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._halt.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self._halt.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END

    # --- threads ----------------------------------------------------------
    def _read(self, worker: _Worker) -> None:
        iterator = iter(self.source)
        try:
            while not self._draining.is_set():
                if not self._wait_for_room():
                    return
                start = time.perf_counter()
                frame = worker.timed(None, lambda: next(iterator, _END))
                if frame is _END:
                    break
                if frame.captured is None:  # live sources decode in their own thread
                    self.report.latency.add("decode", time.perf_counter() - start)
                if not self._put(self.queues[0], frame):
                    return
        except BaseException as error:  # noqa: BLE001 - every failure must reach the user
            self._fail(error)
        finally:
            self._put(self.queues[0], _END)

    def _run_stage(self, worker: _Worker, stage: Stage, inbox: queue.Queue, outbox: queue.Queue) -> None:
        while True:
            frame = self._get(inbox)
            if frame is _END:
                held = worker.timed(None, stage.flush) if not self._halt.is_set() else []
                for item in [*held, _END]:
                    self._put(outbox, item)
                return
            if frame.failure is None:
                start = time.perf_counter()
                try:
                    result = worker.timed(frame.index, lambda f=frame: stage.process(f))
                    released = [result] if isinstance(result, Frame) else list(result)
                except Exception as error:  # noqa: BLE001 - the frame is covered, the run fails
                    released = [frame.replace(failure=error)]
                    # An output that cannot be written (the audit log on a full disk) stays an OutputError.
                    self._fail(error if isinstance(error, OutputError) else StageError(f"stage '{stage.name}' failed on frame {frame.index}: {error}"))
                self.report.latency.add(stage.name, time.perf_counter() - start)
            else:  # keep order: what the stage holds goes out before the failed frame
                released = [*stage.flush(), frame]
            for item in released:
                if not self._put(outbox, item):
                    return

    def _write(self, worker: _Worker) -> None:
        while True:
            frame = self._get(self.queues[-1])
            if frame is _END:
                return
            if frame.failure is not None:
                frame = self.cover(frame)
                self.report.failed_frames += 1
            if frame.captured is not None and self.target_delay is not None:
                self._hold_until(frame.captured + self.target_delay)
            start = time.perf_counter()
            worker.timed(frame.index, lambda f=frame: self.sink.write(f))
            self.report.latency.add("encode", time.perf_counter() - start)
            if frame.captured is not None:
                self.report.latency.add("capture→out", time.monotonic() - frame.captured)
            if self._room is not None:
                self._room.release()
            self.report.frames += 1
            if self.on_frame is not None:
                self.on_frame(frame)

    def _wait_for_room(self) -> bool:
        while self._room is not None and not self._room.acquire(timeout=_POLL_S):
            if self._draining.is_set():
                return False
        return True

    def _hold_until(self, deadline: float) -> None:
        wait = deadline - time.monotonic()
        if wait < 0:
            self.report.late_frames += 1
        while wait > 0 and not self._halt.is_set():
            time.sleep(min(wait, _POLL_S))
            wait = deadline - time.monotonic()

    def _crash(self, error: BaseException) -> None:
        self._fail(error)
        self._halt.set()

    # --- driver -----------------------------------------------------------
    def run(self) -> RunReport:
        """Run to the end of the source; raise the first error any thread met."""
        workers = [_Worker("source", lambda: self._read(workers[0]), self._crash)]
        for i, stage in enumerate(self.stages):
            run_stage = lambda i=i, s=stage: self._run_stage(workers[i + 1], s, self.queues[i], self.queues[i + 1])
            workers.append(_Worker(stage.name, run_stage, self._crash))
        workers.append(_Worker("sink", lambda: self._write(workers[-1]), self._crash))
        start = self.report.started = time.perf_counter()
        for worker in workers:
            worker.thread.start()
        try:
            self._watch(workers)
        except BaseException as error:  # Ctrl-C: stop everything, then let it through
            self._halt.set()
            self._draining.set()
            raise error
        finally:
            for worker in workers:
                worker.thread.join(timeout=JOIN_TIMEOUT_S)
            self.report.wall_s = time.perf_counter() - start
            try:
                self.sink.close()
            except BaseException as error:  # noqa: BLE001
                self._fail(error)
        if self._errors:
            raise self._errors[0]
        return self.report

    def _watch(self, workers: list[_Worker]) -> None:
        sink_thread = workers[-1].thread
        while sink_thread.is_alive():
            sink_thread.join(timeout=_POLL_S)
            now = time.monotonic()
            for worker in workers:
                since = worker.busy_since
                if since is not None and now - since > self.stage_timeout:
                    where = "" if worker.frame_index is None else f" on frame {worker.frame_index}"
                    self._fail(StageError(f"stage '{worker.name}' timed out after {self.stage_timeout:g}s{where}"))
                    self._halt.set()
                    return
