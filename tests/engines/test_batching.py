"""The shared generator engine batches the faces of concurrent streams."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from veil.engines.batching import BatchingEngine


class SlowDoubler:
    """An engine that takes a while, so requests arrive while it is busy."""

    input_names, output_names = ["image", "latent"], ["face"]

    def __init__(self):
        self.batch_sizes = []

    def run(self, inputs):
        self.batch_sizes.append(len(inputs["image"]))
        time.sleep(0.2)
        if np.any(inputs["latent"] < 0):
            raise RuntimeError("engine failed")
        return [inputs["image"] * 2]


def _request(value: float, faces: int = 1) -> dict:
    return {"image": np.full((faces, 3), value, np.float32), "latent": np.full((faces, 2), value, np.float32)}


def test_requests_waiting_while_the_engine_is_busy_go_in_one_batch():
    inner = SlowDoubler()
    engine = BatchingEngine(inner)
    results = {}

    def ask(value, faces):
        results[value] = engine.run(_request(value, faces))[0]

    first = threading.Thread(target=ask, args=(1.0, 1))
    first.start()
    time.sleep(0.05)  # the engine is now busy with the first stream's face
    others = [threading.Thread(target=ask, args=(v, n)) for v, n in ((2.0, 2), (3.0, 3))]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(timeout=5)
    assert inner.batch_sizes == [1, 5]
    assert engine.calls == 2 and engine.requests == 3
    for value, faces in ((1.0, 1), (2.0, 2), (3.0, 3)):  # each caller gets back its own faces
        np.testing.assert_array_equal(results[value], np.full((faces, 3), 2 * value, np.float32))


def test_an_engine_error_reaches_every_caller_of_that_batch():
    engine = BatchingEngine(SlowDoubler())
    with pytest.raises(RuntimeError, match="engine failed"):
        engine.run(_request(-1.0))
    np.testing.assert_array_equal(engine.run(_request(4.0))[0], np.full((1, 3), 8.0, np.float32))  # it keeps serving
