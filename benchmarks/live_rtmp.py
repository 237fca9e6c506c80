"""Live RTMP loopback: capture-to-output latency, sustained fps per anonymiser, and
memory over a long run.

    python -m benchmarks.live_rtmp latency [--seconds 20]      # 1280x720 at 30 fps
    python -m benchmarks.live_rtmp soak [--minutes 10]

A real nginx-rtmp on 127.0.0.1 (``make servers``) carries both legs: this process
publishes a clip of moving faces in a loop, in real time, with the wall clock burned
into each frame (``veil.testing.timecode``); ``veil run rtmp://.../in -o rtmp://.../out``
runs in its own process, as a user would run it; this process plays ``out`` and reads
each frame's stamp on arrival: glass to glass, through two encodes, two decodes and
the server. The baseline row is an FFmpeg relay (decode, re-encode with the same x264
settings, publish: what any RTMP relay costs), run the same way; veil's rows are read
against it. "veil p50/p99" is veil's own capture-to-output log, from its last line.

``soak`` runs veil in blur mode on the looping stream for ``--minutes`` and samples
this process's resident memory every 10 s: it should be flat after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

from veil.stream.anonymisers.classic import CLASSIC_MODES
from veil.stream.jobs import run_live
from veil.stream.jobs.live import open_live_sink, open_live_source
from veil.stream.options import Options
from veil.stream.pipeline import live_detector
from veil.testing import timecode
from veil.testing.clips import make_example_clip
from veil.testing.servers import RtmpServer, publish

WARM_UP_S = 3.0


class StampReader(threading.Thread):
    """Plays the output stream and keeps each frame's age on arrival (ms)."""

    def __init__(self, url: str, seconds: float):
        super().__init__(daemon=True)
        self.url, self.seconds = url, seconds
        self.ages: list[int] = []
        self.arrivals: list[float] = []
        self.unreadable = 0

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            try:
                with av.open(self.url, timeout=(5.0, 3.0)) as container:
                    for frame in container.decode(video=0):
                        value = timecode.read(frame.to_ndarray(format="bgr24")[:40, :260])
                        if value is None:
                            self.unreadable += 1
                        else:
                            self.ages.append(timecode.age_ms(value))
                            self.arrivals.append(time.monotonic())
                        if time.monotonic() > deadline:
                            return
            except (av.FFmpegError, OSError):
                time.sleep(0.1)


def camera(url: str, clip: Path, stop: threading.Event) -> None:
    """Publishes the clip in a loop until ``stop``: a camera that never ends."""
    while not stop.is_set():
        try:
            publish(url, clip, stop=stop, stamp=timecode.stamp, loop=True)
        except (av.FFmpegError, OSError):
            time.sleep(0.2)


def relay_command(source: str, target: str, mode: str | None) -> list[str]:
    if mode is None:
        return [
            "ffmpeg", "-v", "error", "-i", source, "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-g", "60", "-c:a", "aac", "-f", "flv", target,
        ]  # fmt: skip
    return [sys.executable, "-m", "veil", "run", source, "-o", target, "--mode", mode]


def measure(server: RtmpServer, mode: str | None, seconds: float) -> dict:
    target = server.url(f"out-{mode}")
    reader = StampReader(target, seconds + WARM_UP_S + 5)
    reader.start()
    relay = subprocess.Popen(relay_command(server.url("in"), target, mode), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(seconds + WARM_UP_S + 3)  # model load and connection, then the measured span
    load = os.getloadavg()[0]  # the machine's 1-minute load over the row: what else ran beside it
    relay.send_signal(signal.SIGTERM)
    output, _ = relay.communicate(timeout=30)
    reader.join(timeout=10)
    start = reader.arrivals[0] + WARM_UP_S if reader.arrivals else 0
    ages = np.array([age for age, at in zip(reader.ages, reader.arrivals, strict=True) if at >= start])
    span = reader.arrivals[-1] - start if reader.arrivals else 0
    veil = re.findall(r"capture-to-output p50 (\d+) ms, p99 (\d+) ms; (\d+) dropped", output)
    return {
        "mode": mode or "ffmpeg relay",
        "fps": len(ages) / span if span > 0 else 0.0,
        "p50": float(np.percentile(ages, 50)) if len(ages) else float("nan"),
        "p99": float(np.percentile(ages, 99)) if len(ages) else float("nan"),
        "veil": veil[-1] if veil else ("-", "-", "-"),
        "unreadable": reader.unreadable,
        "load": load,
    }


@contextlib.contextmanager
def camera_on_nginx():
    """nginx-rtmp on 127.0.0.1, with a camera publishing the example clip (1280x720,
    30 fps, stamped) to its ``in`` stream in a loop; yields the server."""
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "faces.mp4"
        make_example_clip(clip, width=1280, height=720, fps=30, seconds=6.0)
        server = RtmpServer(Path(folder))
        stop = threading.Event()
        publisher = threading.Thread(target=camera, args=(server.url("in"), clip, stop), daemon=True)
        publisher.start()
        try:
            yield server
        finally:
            stop.set()
            publisher.join(timeout=10)
            server.stop()


def latency(seconds: float, modes=CLASSIC_MODES) -> None:
    with camera_on_nginx() as server:
        rows = [measure(server, mode, seconds) for mode in (None, *modes)]
    print(f"RTMP loopback, 1280x720 at 30 fps, {seconds:g} s per row after {WARM_UP_S:g} s warm-up")
    print(f"{'relay':<13} {'fps out':>7} {'glass p50':>9} {'p99':>6} {'veil p50':>8} {'p99':>6} {'dropped':>7} {'unread':>6} {'load':>5}")
    for r in rows:
        p50, p99, dropped = r["veil"]
        print(f"{r['mode']:<13} {r['fps']:>7.1f} {r['p50']:>9.0f} {r['p99']:>6.0f} {p50:>8} {p99:>6} {dropped:>7} {r['unreadable']:>6} {r['load']:>5.2f}")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak(minutes: float) -> None:
    samples: list[tuple[float, float]] = []
    with camera_on_nginx() as server:
        time.sleep(1.0)
        options = Options(progress=False)
        source = open_live_source(server.url("in"), options, log=print)
        sink = open_live_sink(server.url("out"), source, options, log=print)
        start, done = time.monotonic(), threading.Event()

        def sample():
            while not done.is_set():
                samples.append((time.monotonic() - start, rss_mb()))
                done.wait(10)

        threading.Thread(target=sample, daemon=True).start()
        timer = threading.Timer(minutes * 60, source.slot.end)
        timer.start()
        try:
            report = run_live(source, sink, options, live_detector(options), log=print)
        finally:
            source.close()
            done.set()
    print(f"soak: {report.frames} frames in {minutes:g} min ({report.fps:.1f} fps), {source.dropped} dropped")
    for at, mb in samples[:: max(1, len(samples) // 20)]:
        print(f"  {at:6.0f} s  {mb:7.1f} MB")
    warm = [mb for at, mb in samples if at >= 60]
    if warm:
        print(f"RSS after the first minute: min {min(warm):.1f} MB, max {max(warm):.1f} MB, last {warm[-1]:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("latency", "soak"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    if args.what == "latency":
        latency(args.seconds)
    else:
        soak(args.minutes)


if __name__ == "__main__":
    main()
