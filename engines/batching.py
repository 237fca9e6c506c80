"""One engine shared by several streams, their requests run as one batch.

Each caller's request waits in a queue while the engine is busy; the worker then takes
every request waiting and runs them together. A lone stream pays one thread hop and no
wait; several streams (the cameras of ``veil serve`` and ``veil cameras``) fill each
other's batches. ``wait_s`` bounds how long an idle engine waits for company after the
first request: cameras whose frames arrive together then share a call even when the
engine was free.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from veil.engines.engine import MAX_BATCH


@dataclass
class _Request:
    inputs: dict
    count: int  # items along the batch axis
    shape: tuple  # the first input's shape past the batch axis: only equal ones merge
    done: Future


class BatchingEngine:
    """Wraps an Engine whose inputs all have the batch on axis 0 (numpy, or torch tensors on
    the engine's device). Its outputs stack along ``output_axis``: 0 for most models; YuNet
    folds the batch into its anchor axis (1), in request order, which splits the same way.

    A merged call never holds more than ``max_batch`` items (a request larger than that
    runs alone, and the engine judges it), and only requests of one input shape.
    """

    def __init__(self, engine, max_batch: int = MAX_BATCH, *, wait_s: float = 0.0, output_axis: int = 0):
        if wait_s < 0:
            raise ValueError(f"wait_s must not be negative, got {wait_s}")
        self.engine, self.max_batch, self.wait_s, self.output_axis = engine, max_batch, wait_s, output_axis
        self.input_names, self.output_names = engine.input_names, engine.output_names
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._held: deque[_Request] = deque()  # taken but not run yet (full batch, other shape): first next time
        self.calls = self.requests = 0  # engine calls and the requests they served
        threading.Thread(target=self._serve, name="batching-engine", daemon=True).start()

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.submit(inputs).result()

    def submit(self, inputs: dict[str, np.ndarray]) -> Future:
        """Queue a request; the future holds its outputs (or the engine's error)."""
        # Sized here, in the caller's thread: a malformed request fails its caller, never the worker.
        first = inputs[self.input_names[0]]
        done: Future = Future()
        self._requests.put(_Request(inputs, len(first), tuple(first.shape[1:]), done))
        return done

    def _serve(self) -> None:
        while True:
            first = self._held.popleft() if self._held else self._requests.get()
            batch, size = [first], first.count
            still_held: deque[_Request] = deque()
            for request in self._held:
                size += self._join(batch, size, request, still_held)
            self._held = still_held
            deadline = time.monotonic() + self.wait_s
            while size < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    request = self._requests.get(timeout=left) if left > 0 else self._requests.get_nowait()
                except queue.Empty:
                    break
                size += self._join(batch, size, request, self._held)
            self._run(batch)

    def _join(self, batch: list[_Request], size: int, request: _Request, held: deque) -> int:
        """Add ``request`` to the batch if it fits (else hold it); the items it added."""
        if request.shape == batch[0].shape and size + request.count <= self.max_batch:
            batch.append(request)
            return request.count
        held.append(request)
        return 0

    def _run(self, batch: list[_Request]) -> None:
        try:
            merged = {name: _concatenate([request.inputs[name] for request in batch]) for name in self.input_names}
            outputs = self.engine.run(merged)
        except Exception as error:  # noqa: BLE001 - not swallowed: every waiting caller raises it
            for request in batch:
                request.done.set_exception(error)
            return
        self.calls += 1
        self.requests += len(batch)
        total = sum(request.count for request in batch)
        start = 0
        for request in batch:
            pieces = []
            for output in outputs:
                share = output.shape[self.output_axis] // total
                index = [slice(None)] * output.ndim
                index[self.output_axis] = slice(start * share, (start + request.count) * share)
                pieces.append(output[tuple(index)])
            request.done.set_result(pieces)
            start += request.count


def _concatenate(arrays: list):
    """Along the batch axis: numpy arrays, or torch tensors where they live (the GPU path)."""
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays)
    import torch

    return torch.cat(arrays)
