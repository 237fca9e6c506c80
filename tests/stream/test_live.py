"""Live mode without servers: newest-frame sources, covered gaps, the target delay,
bounded memory under a slow consumer, and clean stops that finish the recording."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest

from veil.stream.anonymisers.classic import cover_whole_frame
from veil.stream.elements import Sink, Stage
from veil.stream.frame import Frame
from veil.stream.graph import Graph
from veil.stream.io.live import CLOCK, CoverGaps, FrameSlot, LiveSource, SourceLost
from veil.stream.jobs import run_live
from veil.stream.options import Options
from veil.stream.stats import RESERVOIR, LatencyLog
from veil.testing import timecode


def frame(index: int, audio=(), value: int = 0) -> Frame:
    image = np.full((8, 8, 3), value, np.uint8)
    return Frame(image=image, pts=index * 3000, time_base=CLOCK, index=index, audio=audio, captured=time.monotonic())


def test_slot_keeps_the_newest_frame_and_moves_the_audio_of_dropped_ones():
    slot = FrameSlot()
    slot.put(frame(0, audio=("a0",)))
    slot.put(frame(1, audio=("a1",)))
    slot.put(frame(2, audio=("a2",)))
    taken = slot.take(timeout=0.1)
    assert taken.index == 2
    assert taken.audio == ("a0", "a1", "a2"), "audio of dropped frames must ride on the frame that is kept"
    assert slot.dropped == 2 and slot.received == 3
    assert slot.take(timeout=0.01) is None


def test_slot_end_stops_the_reader_and_hands_over_an_error():
    slot = FrameSlot()
    slot.put(frame(0))
    slot.end(RuntimeError("camera unplugged"))
    assert slot.take(timeout=0.1).index == 0, "frames already captured are still delivered"
    with pytest.raises(RuntimeError, match="camera unplugged"):
        slot.take(timeout=0.1)


def test_while_the_source_is_lost_the_last_picture_is_sent_covered_with_rising_timestamps():
    slot = FrameSlot()
    lost = threading.Event()
    frames = iter(CoverGaps(slot, gap_s=0.05, is_lost=lost.is_set))
    slot.put(frame(0, value=200))
    first = next(frames)
    lost.set()
    gap = [next(frames) for _ in range(3)]
    assert all(isinstance(f.failure, SourceLost) for f in gap), "frames sent while the source is away are marked for covering"
    assert all(f.tracks is None and f.audio == () for f in gap)
    pts = [first.pts] + [f.pts for f in gap]
    assert pts == sorted(set(pts)), "timestamps must keep rising through a gap"
    lost.clear()
    slot.put(frame(1, value=10))  # the source is back, its own (older) timestamp
    back = next(frames)
    assert back.failure is None and back.pts > pts[-1]
    assert [f.index for f in [first, *gap, back]] == [0, 1, 2, 3, 4]


class RecordingSink(Sink):
    """Notes when each frame was written, its capture time and its audio; keeps no
    pictures, so it holds no memory of its own."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.written: list[tuple[float, float, int]] = []
        self.closed = False

    def write(self, frame: Frame) -> None:
        time.sleep(self.delay_s)
        self.written.append((time.monotonic(), frame.captured, len(frame.audio)))

    def close(self) -> None:
        self.closed = True


def test_target_delay_holds_every_frame_until_its_capture_time_plus_the_delay():
    captured = time.monotonic()
    source = [frame(i).replace(captured=captured + i * 0.01) for i in range(10)]
    sink = RecordingSink()
    report = Graph(source, [], sink, cover=cover_whole_frame, queue_size=1, target_delay=0.2).run()
    waits = [written_at - captured for written_at, captured, _ in sink.written]
    assert len(waits) == 10 and min(waits) >= 0.2
    assert report.latency.percentiles_ms()["capture→out"][0] == 10


def test_latency_log_stays_bounded_but_counts_every_call():
    log = LatencyLog()
    for i in range(RESERVOIR * 2):
        log.add("stage", (i % 100) / 1000)
    calls, p50, p99 = log.percentiles_ms()["stage"]
    assert calls == RESERVOIR * 2
    assert len(log._samples["stage"]) == RESERVOIR
    assert 40 <= p50 <= 60 and p99 >= 95


def test_timecode_survives_h264_at_streaming_quality(tmp_path):
    rng = np.random.default_rng(1)
    values = [int(v) for v in rng.integers(0, timecode.WRAP, 10)]
    path = tmp_path / "stamped.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"crf": "30"}
        for value in values:
            image = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
            timecode.stamp(image, value)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    with av.open(str(path)) as back:
        read = [timecode.read(f.to_ndarray(format="bgr24")) for f in back.decode(video=0)]
    assert read == values
    assert timecode.read(np.zeros((360, 640, 3), np.uint8)) is None, "a blank corner is not a stamp"


def test_a_slow_consumer_makes_the_source_drop_frames_not_memory_grow(example_clip, yunet):
    clip, _ = example_clip  # 3 s at 25 fps, with audio
    with av.open(str(clip)) as container:
        audio_frames = sum(1 for _ in container.decode(audio=0))
    source = LiveSource(str(clip), realtime=True)
    sink = RecordingSink(delay_s=0.15)  # about 6 fps where 25 arrive
    tracemalloc.start()
    try:
        report = run_live(source, sink, Options(progress=False), yunet, log=lambda *_: None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        source.close()
    frame_bytes = 640 * 360 * 3
    assert source.dropped > 30, "frames the pipeline cannot take must be dropped at the source"
    assert report.frames + source.dropped == 75
    assert peak < 25 * frame_bytes, f"peak {peak / frame_bytes:.0f} frames' worth of memory: something queues without bound"
    delivered = sum(audio for _, _, audio in sink.written)
    assert delivered == audio_frames, "dropping video must never drop audio"


def test_stopping_a_live_run_with_sigterm_finishes_the_recording(example_clip, tmp_path):
    clip, _ = example_clip
    out = tmp_path / "live.mkv"
    # A live run from a file plays it in real time; stop it part way through.
    process = subprocess.Popen(
        [sys.executable, "-m", "veil", "run", str(clip), "--live", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "live.partial.mkv").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "stopping" in stdout
    assert out.exists() and not (tmp_path / "live.partial.mkv").exists()
    with av.open(str(out)) as recording:
        frames = sum(1 for _ in recording.decode(video=0))
        assert recording.streams.audio, "the recording keeps the audio"
    assert 10 <= frames < 75, "a finished, playable recording of the part before the stop"


def test_live_timestamps_rise_and_follow_the_source_clock(example_clip):
    clip, _ = example_clip
    source = LiveSource(str(clip), realtime=True)
    try:
        frames = list(source)
    finally:
        source.close()
    assert len(frames) + source.dropped == 75
    times = np.array([float(f.pts * f.time_base) for f in frames])
    assert np.all(np.diff(times) > 0)
    assert times[-1] - times[0] == pytest.approx(74 / 25, abs=0.05), "source timing is kept, not arrival jitter"
    assert all(f.time_base == Fraction(1, 90000) for f in frames)


def test_a_capped_graph_takes_the_next_frame_only_after_one_has_left():
    """With max_in_flight, frames wait in the source (which keeps the newest), not in
    the graph's queues where they would age behind a busy stage."""
    pulled: list[float] = []

    def source():
        for i in range(6):
            pulled.append(time.monotonic())
            yield frame(i)

    class Slow(Stage):
        name = "slow"

        def process(self, f):
            time.sleep(0.05)
            return f

    sink = RecordingSink()
    Graph(source(), [Slow(), Slow()], sink, cover=cover_whole_frame, queue_size=1, max_in_flight=1).run()
    written = [written_at for written_at, _, _ in sink.written]
    assert len(written) == 6
    assert all(pulled[i + 1] >= written[i] for i in range(5)), "a frame was taken while another was inside"


def test_verbose_live_runs_report_latency_and_drops_while_running(example_clip, yunet, monkeypatch):
    import veil.stream.jobs.live

    monkeypatch.setattr(veil.stream.jobs.live, "LIVE_REPORT_EVERY_S", 0.5)
    clip, _ = example_clip
    source = LiveSource(str(clip), realtime=True)
    lines: list[str] = []
    try:
        run_live(source, RecordingSink(), Options(progress=False, verbose=True), yunet, log=lines.append)
    finally:
        source.close()
    reports = [line for line in lines if line.startswith("veil: live:")]
    assert len(reports) >= 4, "a report every 0.5 s of a 3 s run, and one at the end"
    assert all("capture-to-output p50" in line and "dropped at the source" in line for line in reports)
