"""WebRTC round trip: an aiortc client sends the example clip at 30 fps, each frame
stamped with the wall clock (``veil.testing.timecode``), to a server on 127.0.0.1, and reads
the stamp of every frame that comes back.

    python -m benchmarks.webrtc_latency [--seconds 20] [--sizes 1280x720,640x360] [--mode blur]

Two servers, each in its own process (as a browser and ``veil serve`` would be):

- echo: a bare aiortc peer that sends the decoded camera straight back (VP8 decode and
  encode, no anonymisation): the cost of WebRTC itself, the baseline;
- veil: ``veil.commands.serve``, the camera anonymised by the live graph.

The round trip runs from the moment a frame is handed to the client's encoder until
the client has decoded it back (camera capture and display are not included). The
first seconds of each row (ICE, bitrate ramp-up) are left out. Rows are reported with
their ratio to the echo server at the same size, measured in this same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

REPO = Path(__file__).resolve().parent.parent

from veil.testing import timecode
from veil.testing.clips import render_frames
from veil.testing.peers import LoopedClip

WARMUP_S = 3.0
SERVE = """
import json, sys
from veil.stream.options import Options
from veil.commands.serve import serve
options = Options(mode=sys.argv[1], detector_options=json.loads(sys.argv[2]), progress=False)
try:
    serve("127.0.0.1", 0, options, log=lambda line: print(line, flush=True))
except KeyboardInterrupt:
    pass
"""


@dataclass
class Row:
    server: str
    size: str
    sent_fps: float
    received_fps: float
    p50_ms: float
    p99_ms: float
    unreadable: int
    server_line: str = ""


BAND = 40  # rows under the picture for the stamp
LOOP_S = 1.5  # the clip's first 1.5 s: three faces, none near the band


def stamped_clip(width: int, height: int, fps: int) -> LoopedClip:
    """The example clip's start, looped, above a band that holds the stamp (no face,
    nor its blur, reaches it); each frame stamped with the clock as it leaves."""
    band = np.full((BAND, width, 3), 128, np.uint8)
    images = [np.vstack([image, band]) for image, _ in render_frames(width, height - BAND, fps, LOOP_S)]
    return LoopedClip(images, fps, stamp=lambda image, _: timecode.stamp(image[-BAND:]))


async def measure(url: str, width: int, height: int, fps: int, seconds: float) -> tuple:
    """(frames sent per second, received per second, round trips in ms, unreadable)."""
    clip = stamped_clip(width, height, fps)
    pc = RTCPeerConnection()
    pc.addTransceiver(clip, direction="sendrecv")
    trips: list[int] = []
    counts = {"received": 0, "unreadable": 0}
    window = {"from": float("inf"), "to": float("inf")}

    async def read(track):
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if not window["from"] <= now < window["to"]:
                    continue
                counts["received"] += 1
                value = timecode.read(frame.to_ndarray(format="gray")[-BAND:])
                if value is None:
                    counts["unreadable"] += 1
                else:
                    trips.append(timecode.age_ms(value))
        except MediaStreamError:
            pass

    pc.on("track", lambda track: asyncio.ensure_future(read(track)))
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "offer", json=offer) as reply,
    ):
        if reply.status != 200:
            raise SystemExit(f"webrtc_latency: {url} refused the offer: {await reply.text()}")
        answer = await reply.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))  # the answer also names its session
    await asyncio.sleep(WARMUP_S)
    sent_before = clip.sent
    window["from"] = time.monotonic()
    window["to"] = window["from"] + seconds
    await asyncio.sleep(seconds)
    sent = clip.sent - sent_before
    await pc.close()
    return sent / seconds, counts["received"] / seconds, trips, counts["unreadable"]


# --- servers, each in its own process ------------------------------------------------
class Server:
    def __init__(self, name: str, command: list[str]):
        self.name = name
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.url = self._wait_for_url()
        threading.Thread(target=self._collect, daemon=True).start()

    def _wait_for_url(self) -> str:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            match = re.search(r"serving on (http://\S+)", line)
            if match:
                return match.group(1)
        raise SystemExit(f"webrtc_latency: the {self.name} server did not start:\n" + "\n".join(self.lines))

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def live_line(self, after: int) -> str:
        """The server's closing line for the session that ended after ``after`` lines."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if re.match(r"veil: (camera \d+: )?live:", line):
                    return line
            time.sleep(0.1)
        return ""

    def stop(self) -> None:
        self.process.send_signal(2)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def echo_server() -> None:
    """The baseline: send the camera's decoded frames straight back."""
    from aiohttp import web

    peers = set()

    async def offer(request):
        params = await request.json()
        pc = RTCPeerConnection()
        peers.add(pc)
        pc.on("track", lambda track: pc.addTrack(track) if track.kind == "video" else None)

        @pc.on("connectionstatechange")
        async def closed():
            if pc.connectionState in ("failed", "closed"):
                peers.discard(pc)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(**params))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def main():
        app = web.Application()
        app.router.add_post("/offer", offer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(f"echo: serving on http://127.0.0.1:{runner.addresses[0][1]}/", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.gather(*(pc.close() for pc in peers))
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


# --- report ---------------------------------------------------------------------------
def table(rows: list[Row], args) -> str:
    echo = {row.size: row for row in rows if row.server == "echo"}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        (
            f"WebRTC round trip on 127.0.0.1: {args.fps} fps sent for {args.seconds:g} s "
            f"per row (after {WARMUP_S:g} s warm-up); {platform.machine()}, "
            f"{cores} cores usable"
        ),
        "",
        "| server | size | sent fps | received fps | round trip p50 ms | p99 ms | p50 vs echo | unreadable | server capture→out |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        base = echo.get(row.size)
        ratio = f"{row.p50_ms / base.p50_ms:.2f}x" if base and base.p50_ms > 0 and row is not base else "–"
        timing = re.search(r"capture-to-output (p50 \d+ ms, p99 \d+ ms)", row.server_line)
        lines.append(
            f"| {row.server} | {row.size} | {row.sent_fps:.1f} | {row.received_fps:.1f} | {row.p50_ms:.0f} | "
            f"{row.p99_ms:.0f} | {ratio} | {row.unreadable} | {timing.group(1) if timing else '–'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per row")
    parser.add_argument("--sizes", default="1280x720,640x360")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--mode", default="blur", help="Veil's anonymisation mode")
    parser.add_argument(
        "--detector-options",
        default="{}",
        metavar="JSON",
        help="for the detector, e.g. '{\"input_size\": 640}' (default: as veil serve)",
    )
    parser.add_argument("--no-echo", action="store_true", help="skip the echo baseline")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server()
        return
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    servers = [] if args.no_echo else [("echo", [sys.executable, __file__, "--echo-server"])]
    servers.append(
        (
            f"veil {args.mode}" + ("" if args.detector_options == "{}" else f" {args.detector_options}"),
            [sys.executable, "-c", SERVE, args.mode, args.detector_options],
        )
    )
    rows = []
    for name, command in servers:
        server = Server(name, command)
        try:
            for width, height in sizes:
                before = len(server.lines)
                sent, received, trips, unreadable = asyncio.run(measure(server.url, width, height, args.fps, args.seconds))
                p50, p99 = np.percentile(trips, [50, 99]) if trips else (float("nan"), float("nan"))
                row = Row(
                    name.split()[0] if name == "echo" else name,
                    f"{width}x{height}",
                    sent,
                    received,
                    p50,
                    p99,
                    unreadable,
                )
                if name != "echo":
                    row.server_line = server.live_line(before)
                rows.append(row)
                print(
                    f"{row.server} {row.size}: p50 {p50:.0f} ms, p99 {p99:.0f} ms, {received:.1f} fps back",
                    flush=True,
                )
        finally:
            server.stop()
    print()
    print(table(rows, args))


if __name__ == "__main__":
    main()
