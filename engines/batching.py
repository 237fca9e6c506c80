"""One engine shared by several streams, their faces run as one batch.

Each caller's request waits in a queue while the engine is busy; the worker then takes
every request waiting and runs them together. A lone stream pays one thread hop and no
wait; several streams (the cameras of ``veil serve``) fill each other's batches.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np

from veil.engines.engine import MAX_BATCH


class BatchingEngine:
    """Wraps an Engine whose inputs and outputs all have the batch on axis 0 (numpy, or
    torch tensors on the engine's device).

    A merged call never holds more than ``max_batch`` faces (a request larger than that
    runs alone, and the engine judges it).
    """

    def __init__(self, engine, max_batch: int = MAX_BATCH):
        self.engine, self.max_batch = engine, max_batch
        self._held = None  # a request that did not fit the last call: first in the next
        self.input_names, self.output_names = engine.input_names, engine.output_names
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.calls = self.requests = 0  # engine calls and the requests they served
        threading.Thread(target=self._serve, name="batching-engine", daemon=True).start()

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.submit(inputs).result()

    def submit(self, inputs: dict[str, np.ndarray]) -> Future:
        """Queue a request; the future holds its outputs (or the engine's error)."""
        # Sized here, in the caller's thread: a malformed request fails its caller, never the worker.
        count = len(inputs[self.input_names[0]])
        done: Future = Future()
        self._requests.put((inputs, count, done))
        return done

    def _serve(self) -> None:
        while True:
            first, self._held = self._held or self._requests.get(), None
            waiting, size = [first], first[1]
            while True:
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
                if size + request[1] > self.max_batch:
                    self._held = request
                    break
                waiting.append(request)
                size += request[1]
            self._run(waiting)

    def _run(self, waiting: list) -> None:
        try:
            merged = {name: _concatenate([inputs[name] for inputs, _, _ in waiting]) for name in self.input_names}
            outputs = self.engine.run(merged)
        except Exception as error:  # noqa: BLE001 - not swallowed: every waiting caller raises it
            for _, _, done in waiting:
                done.set_exception(error)
            return
        self.calls += 1
        self.requests += len(waiting)
        start = 0
        for _, count, done in waiting:
            done.set_result([output[start:start + count] for output in outputs])
            start += count


def _concatenate(arrays: list):
    """Along the batch axis: numpy arrays, or torch tensors where they live (the GPU path)."""
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays)
    import torch

    return torch.cat(arrays)
