"""`veil camera` latency: capture to virtual camera, per anonymisation mode.

    python -m benchmarks.vcam_latency [--seconds 10] [--size 1280x720] [--fps 30]

A clip of moving faces (``veil.testing.clips``) is played at its own pace by a
``LiveSource`` (``realtime=True``), the stand-in for a webcam. As each frame leaves
the source, its capture moment (the source's ``captured``, mapped to the wall clock)
is burned into its top-left corner with ``veil.testing.timecode``. The frames go through
``run_live`` into ``VirtualCameraSink``, whose ``pyvirtualcam.Camera`` has a recording
device behind it (a v4l2loopback module cannot be loaded everywhere); the device reads
each frame's stamp the moment pyvirtualcam hands it over: capture-to-output latency
measured from the pixels, as a receiving app would, not from the pipeline's own log.

The pass-through row (source straight into the sink, no stages) is the floor, run in
the same process: the source's pacing, the newest-frame slot and the sink. Other rows
give their latency above it. Absolute numbers hold for this machine only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from veil.stream.anonymisers.classic import CLASSIC_MODES, cover_whole_frame
from veil.stream.graph import Graph
from veil.stream.io.live import LiveSource
from veil.stream.io.vcam import VirtualCameraSink, parse_size
from veil.stream.jobs import run_live
from veil.stream.options import Options
from veil.stream.pipeline import live_detector
from veil.testing import timecode
from veil.testing.clips import make_example_clip

BACKEND = "veil-benchmark-recorder"
CORNER = np.s_[: timecode.ROWS * timecode.CELL, : timecode.COLUMNS * timecode.CELL]


class RecordingDevice:
    """A pyvirtualcam backend that keeps, per frame, the wall time it arrived and the
    timecode corner (the whole frame would be 2.7 MB a frame)."""

    def __init__(self, *, width, height, fps, fourcc, device, received, **kw):
        self.width, self.height, self.received = width, height, received
        self.name = device or "/dev/video-benchmark"

    def send(self, frame: np.ndarray) -> None:
        arrived = time.time()
        corner = frame.reshape(self.height, self.width, 3)[CORNER].copy()
        self.received.append((arrived, corner))

    def close(self) -> None:
        pass

    def device(self) -> str:
        return self.name

    def native_fourcc(self):
        return None


class Stamped:
    """Burns each frame's capture moment (wall-clock ms) into it as it leaves the source."""

    def __init__(self, source: LiveSource):
        self.source, self.rate = source, source.rate

    @property
    def dropped(self) -> int:
        return self.source.dropped

    def __iter__(self):
        for frame in self.source:
            waited_ms = (time.monotonic() - frame.captured) * 1000
            timecode.stamp(frame.image, timecode.now_ms() - round(waited_ms))
            yield frame


@dataclass
class Row:
    name: str
    received: list = field(default_factory=list)
    dropped: int = 0
    covered: int = 0
    pipeline_p50: float | None = None
    stages: dict = field(default_factory=dict)

    def ages_ms(self) -> tuple[np.ndarray, int]:
        """Capture-to-output ms of each frame whose stamp reads, and how many did not."""
        ages, unreadable = [], 0
        for arrived, corner in self.received:
            value = timecode.read(corner)
            if value is None:
                unreadable += 1
                continue
            ages.append((int(arrived * 1000) - value) % timecode.WRAP)
        return np.array(ages, np.float64), unreadable

    def fps(self) -> float:
        if len(self.received) < 2:
            return 0.0
        span = self.received[-1][0] - self.received[0][0]
        return (len(self.received) - 1) / span if span > 0 else 0.0


def camera_factory(received: list):
    import pyvirtualcam

    pyvirtualcam.register_backend(BACKEND, RecordingDevice)

    def factory(**kwargs):
        return pyvirtualcam.Camera(backend=BACKEND, received=received, **kwargs)

    return factory


def quiet(*_):
    pass


def run_one(name: str, clip: Path, detector, width: int, height: int) -> Row:
    row = Row(name)
    source = LiveSource(str(clip), realtime=True, log=quiet)
    stamped = Stamped(source)
    sink = VirtualCameraSink(
        width,
        height,
        float(source.rate),
        camera=camera_factory(row.received),
        log=quiet,
    )
    try:
        if name == "pass-through":
            graph = Graph(stamped, [], sink, cover=cover_whole_frame, queue_size=1)
            report = graph.run()
        else:
            options = Options(mode=name, progress=False)
            report = run_live(stamped, sink, options, detector, log=quiet)
    finally:
        source.close()
    percentiles = report.latency.percentiles_ms()
    row.dropped, row.covered = source.dropped, report.failed_frames
    row.pipeline_p50 = percentiles.get("capture→out", (0, None, None))[1]
    row.stages = {stage: p50 for stage, (_, p50, _) in percentiles.items()}
    return row


def machine_info() -> str:
    import av
    import cv2
    import onnxruntime

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores "
        f"({usable} usable); Python {platform.python_version()}, onnxruntime "
        f"{onnxruntime.__version__}, OpenCV {cv2.__version__}, PyAV {av.__version__}"
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table(rows: list[Row], source_fps: float) -> str:
    floor = np.percentile(rows[0].ages_ms()[0], 50) if rows[0].received else 0.0
    lines = [
        (
            "| path | frames out | fps | fps / source | capture→out p50 ms | p99 ms | p50 above pass-through | "
            "pipeline's own p50 ms | detect p50 | anonymise p50 | dropped at source | covered | stamp unreadable |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ages, unreadable = row.ages_ms()
        p50, p99 = (np.percentile(ages, 50), np.percentile(ages, 99)) if len(ages) else (float("nan"),) * 2
        own = _ms(row.pipeline_p50)
        detect, anonymise = (
            _ms(row.stages.get("detect")),
            _ms(row.stages.get("anonymise")),
        )
        lines.append(
            f"| {row.name} | {len(row.received)} | {row.fps():.1f} | {row.fps() / source_fps:.2f} | "
            f"{p50:.0f} | {p99:.0f} | {p50 - floor:+.0f} | {own} | {detect} | "
            f"{anonymise} | {row.dropped} | {row.covered} | {unreadable} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length per run")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--modes", default=",".join(CLASSIC_MODES), help="comma-separated anonymisation modes")
    args = parser.parse_args(argv)
    width, height = parse_size(args.size)
    modes = [m for m in args.modes.split(",") if m]
    if not modes:
        parser.error("--modes needs at least one mode")
    for mode in modes:
        if mode not in CLASSIC_MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join(CLASSIC_MODES)}")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "faces.mp4"
        warm_up = Path(folder) / "warm_up.mp4"
        make_example_clip(
            clip,
            width=width,
            height=height,
            fps=args.fps,
            seconds=args.seconds,
            audio=False,
        )
        make_example_clip(warm_up, width=width, height=height, fps=args.fps, seconds=1.0, audio=False)
        detector = live_detector(Options())  # what `veil camera` runs
        run_one(modes[0], warm_up, detector, width, height)  # load and warm up outside the clock
        rows = [run_one(name, clip, detector, width, height) for name in ["pass-through", *modes]]
    print(
        f"vcam_latency: {width}x{height} at {args.fps} fps, {args.seconds:g} s per run, "
        f"YuNet on CPU (the live detector); {machine_info()}; whole run {time.perf_counter() - started:.0f} s\n"
    )
    print(table(rows, args.fps))
    print(
        "\ncapture→out: from the frame leaving the stand-in webcam to pyvirtualcam handing it "
        "to the (recording) device, read from the pixels. fps: frames the device got per "
        "second of wall time. The pipeline's own p50 is run_live's capture→out log."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
