"""The graph runtime: order, backpressure, fail-closed covering, no hangs."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from tests.fakes import ListSink
from veil.errors import StageError
from veil.stream.elements import Stage
from veil.stream.frame import Frame
from veil.stream.graph import Graph


def frames(count: int):
    for i in range(count):
        yield Frame(image=np.full((4, 4, 3), i % 256, np.uint8), pts=i * 10, time_base=Fraction(1, 250), index=i)


class AddOne(Stage):
    name = "add"

    def process(self, frame):
        return frame.replace(image=frame.image + 1)


class RaiseAt(Stage):
    name = "boom"

    def __init__(self, index):
        self.index = index

    def process(self, frame):
        if frame.index == self.index:
            raise RuntimeError("detector exploded")
        return frame


def covered(frame):
    return frame.replace(image=np.full_like(frame.image, 77))


def test_frames_arrive_in_order_with_timestamps_untouched():
    sink = ListSink()
    report = Graph(frames(50), [AddOne(), AddOne()], sink, cover=covered).run()
    assert [f.index for f in sink.frames] == list(range(50))
    assert [f.pts for f in sink.frames] == [i * 10 for i in range(50)]
    assert all(int(f.image[0, 0, 0]) == (f.index % 256) + 2 for f in sink.frames)
    assert report.frames == 50 and sink.closed


def test_a_raising_stage_covers_its_frame_and_fails_the_run():
    sink = ListSink()
    with pytest.raises(StageError, match="detector exploded"):
        Graph(frames(100), [RaiseAt(5), AddOne()], sink, cover=covered, queue_size=2).run()
    failed = [f for f in sink.frames if f.index == 5]
    assert len(failed) == 1 and (failed[0].image == 77).all()
    # Every other frame went through the whole chain; none reached the sink raw.
    assert all(int(f.image[0, 0, 0]) == (f.index % 256) + 1 for f in sink.frames if f.index != 5)
    # The source stopped soon after the failure instead of reading to the end.
    assert len(sink.frames) < 100
    assert sink.closed


def test_a_stage_that_hangs_stops_the_graph_without_hanging():
    release = threading.Event()

    class Hang(Stage):
        name = "hang"

        def process(self, frame):
            if frame.index == 3:
                release.wait(10)
            return frame

    sink = ListSink()
    start = time.monotonic()
    with pytest.raises(StageError, match="'hang' timed out"):
        Graph(frames(20), [Hang()], sink, cover=covered, stage_timeout=0.3).run()
    release.set()
    assert time.monotonic() - start < 8
    assert 3 not in [f.index for f in sink.frames]


def test_a_failing_sink_stops_the_graph():
    class BrokenSink(ListSink):
        def write(self, frame):
            if frame.index == 2:
                raise OSError("disk full")
            super().write(frame)

    sink = BrokenSink()
    with pytest.raises(OSError, match="disk full"):
        Graph(frames(1000), [AddOne()], sink, cover=covered).run()
    assert len(sink.frames) == 2 and sink.closed


def test_source_errors_reach_the_caller_after_frames_in_flight_are_written():
    def broken_source():
        yield from frames(3)
        raise ValueError("truncated stream")

    sink = ListSink()
    with pytest.raises(ValueError, match="truncated"):
        Graph(broken_source(), [AddOne()], sink, cover=covered).run()
    assert [f.index for f in sink.frames] == [0, 1, 2]


def test_queues_are_bounded_so_a_slow_sink_holds_the_source_back():
    read = []

    def counting_source():
        for frame in frames(200):
            read.append(frame.index)
            yield frame

    class SlowSink(ListSink):
        def write(self, frame):
            time.sleep(0.002)
            # source, 2 stage threads and 3 queues of 2 can hold at most a handful
            assert len(read) - len(self.frames) <= 12
            super().write(frame)

    Graph(counting_source(), [AddOne(), AddOne()], SlowSink(), cover=covered, queue_size=2).run()


def test_per_stage_latency_is_collected():
    report = Graph(frames(20), [AddOne()], ListSink(), cover=covered).run()
    table = report.latency.percentiles_ms()
    assert set(table) == {"decode", "add", "encode"}
    assert all(calls == 20 for calls, _, _ in table.values())


def test_a_holding_stage_that_fails_to_flush_stops_the_graph_without_hanging():
    class BadFlush(Stage):
        name = "hold"

        def process(self, frame):
            return []

        def flush(self):
            raise RuntimeError("lost the held frames")

    sink = ListSink()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="lost the held frames"):
        Graph(frames(10), [BadFlush()], sink, cover=covered).run()
    assert time.monotonic() - start < 5 and sink.frames == []
