"""The WebRTC server end to end: real aiortc peers on 127.0.0.1 send a face clip in
real time and get the anonymised video back; the privacy gate judges what arrives.

Each sent frame carries its number in a timecode stamp (top-left corner, away from
the faces), so a received frame is compared with the very frame it was made from.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.known_faces import raw_faces
from veil.commands.serve import camera_graphs
from veil.errors import OutputError
from veil.stream.frame import Frame
from veil.stream.io.live import CLOCK
from veil.stream.io.webrtc import WebRtcServer, WebRtcSink, parse_url
from veil.stream.options import Options
from veil.testing import timecode
from veil.testing.clips import render_frames
from veil.testing.peers import LoopedClip
from veil.testing.privacy import leaked_faces

FPS = 25
TIMEOUT_S = 20.0


TRUTH = [boxes for _, boxes in render_frames(640, 360, FPS, 3.0)]  # the faces of each frame of ``clip``


@pytest.fixture(scope="module")
def clip() -> list[np.ndarray]:
    """3 s of the example clip, 640x360, five moving faces."""
    return [image for image, _ in render_frames(640, 360, FPS, 3.0)]


@pytest.fixture
def server(live_yunet):
    options = Options(progress=False)
    with WebRtcServer("127.0.0.1", 0, run_graph=camera_graphs(options, live_yunet), log=lambda *_: None) as running:
        yield running


def camera_clip(images: list[np.ndarray]) -> LoopedClip:
    """A camera stand-in whose every frame carries its number."""
    return LoopedClip(images, FPS, stamp=lambda image, number: timecode.stamp(image, number))


class Received:
    """Reads a received track and keeps every frame, by the number stamped in it (None
    where a mask covers the stamp)."""

    def __init__(self):
        self.count = 0
        self.numbered: dict[int, np.ndarray] = {}
        self.unnumbered: list[np.ndarray] = []
        self.first = asyncio.Event()
        self.ended = asyncio.Event()

    async def read(self, track) -> None:
        try:
            while True:
                image = (await track.recv()).to_ndarray(format="bgr24")
                self.count += 1
                self.first.set()
                number = timecode.read(image)
                if number is None:
                    self.unnumbered.append(image)
                else:
                    self.numbered.setdefault(number, image)
        except MediaStreamError:
            pass
        finally:
            self.ended.set()

    async def wait_for(self, frames: int, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while self.count < frames and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.count >= frames, f"{self.count} frames received, expected {frames}"


async def connect(url: str, path: str, track=None, received: Received | None = None) -> tuple[RTCPeerConnection, Received]:
    """An aiortc peer: ``track`` goes out (sendrecv), or receive-only without one."""
    pc = RTCPeerConnection()
    received = received or Received()
    if track is not None:
        pc.addTransceiver(track, direction="sendrecv")
    else:
        pc.addTransceiver("video", direction="recvonly")
    pc.on("track", lambda incoming: asyncio.ensure_future(received.read(incoming)))
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + path, json=offer) as reply,
    ):
        assert reply.status == 200, await reply.text()
        answer = await reply.json()
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    return pc, received


def judge(gate, track: LoopedClip, received: Received, cache: dict | None = None) -> tuple[int, list[int]]:
    """Every received frame: (faces the gate finds in the sent frames, numbers of frames
    where a known face is left raw or the gate finds a sent face again). A frame whose
    stamp a mask covered is judged against no input: the gate must find no face in it."""
    cache = {} if cache is None else cache
    found, leaks = 0, []
    for number, after in sorted(received.numbered.items()):
        if number not in cache:
            cache[number] = gate.detect(track.picture(number))
        faces = cache[number]
        found += len(faces)
        before = track.picture(number)
        if len(leaked_faces(faces, after, gate)) or raw_faces(before, after, TRUTH[number % len(TRUTH)]):
            leaks.append(number)
    leaks += [-1 for after in received.unnumbered if len(gate.detect(after))]
    return found, leaks


def test_a_camera_gets_its_video_back_anonymised_and_viewers_see_it(server, clip, gate):
    camera = camera_clip(clip)

    async def session():
        pc, back = await connect(server.url, "offer", camera, Received())
        await back.wait_for(FPS)
        viewer_pc, watched = await connect(server.url, "watch", received=Received())
        # A viewer that joins sees frames at once.
        await watched.wait_for(1, timeout=5.0)
        await back.wait_for(4 * FPS)
        await watched.wait_for(2 * FPS)
        await pc.close()
        await viewer_pc.close()
        return back, watched

    back, watched = asyncio.run(session())
    cache = {}
    found, leaks = judge(gate, camera, back, cache)
    assert len(back.numbered) >= 40, "too few numbered frames came back to judge"
    assert found >= 20, "the gate must see the faces in the sent frames for this to mean anything"
    assert leaks == [], f"faces found again in returned frames {leaks}"
    found, leaks = judge(gate, camera, watched, cache)
    assert found >= 10 and leaks == [], f"faces found again in broadcast frames {leaks}"


def test_a_peer_that_hangs_up_stops_its_graph(server, clip):
    async def session():
        pc, back = await connect(server.url, "offer", camera_clip(clip))
        await back.wait_for(5)
        (camera,) = server.sessions
        await pc.close()
        return camera

    camera = asyncio.run(session())
    camera.thread.join(timeout=TIMEOUT_S)
    assert not camera.thread.is_alive(), "the graph kept running after its peer left"
    assert camera.error is None
    deadline = time.monotonic() + 5
    while server.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.sessions == []


class FailsAfter:
    """A detector that works ``frames`` times, then raises."""

    def __init__(self, detector, frames: int):
        self.detector, self.left = detector, frames

    def detect(self, image):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("detector crashed")
        return self.detector.detect(image)


def test_a_failing_graph_covers_the_frame_and_hangs_up(clip, gate, live_yunet):
    lines: list[str] = []
    failed: list[np.ndarray] = []  # what left the graph for frames a stage failed on
    camera = camera_clip(clip)
    received = Received()

    def tap(frame):
        if frame.failure is not None:
            failed.append(frame.image)

    async def session(server):
        pc, back = await connect(server.url, "offer", camera, received)
        await asyncio.wait_for(back.ended.wait(), TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        while pc.connectionState == "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        state = pc.connectionState
        await pc.close()
        return state

    with WebRtcServer(
        "127.0.0.1",
        0,
        run_graph=camera_graphs(Options(progress=False), FailsAfter(live_yunet, frames=15)),
        tap=tap,
        log=lines.append,
    ) as server:
        state = asyncio.run(session(server))
    assert state in ("closed", "failed"), "the server must hang up on a failed graph"
    stopped = [line for line in lines if "camera 1 stopped" in line]
    assert stopped, lines
    assert "stage 'detect' failed" in stopped[0] and "detector crashed" in stopped[0]
    # The frame the detector failed on left covered whole (its stamp too).
    assert failed and all(timecode.read(image) is None for image in failed)
    assert all(len(gate.detect(image)) == 0 for image in failed)
    # Every frame that came back before the hang-up was anonymised.
    assert 5 <= received.count <= 20
    found, leaks = judge(gate, camera, received)
    assert found >= 5 and leaks == [], f"faces found again in frames {leaks}"


def post(url: str, body: bytes) -> tuple[int, str]:
    async def send():
        async with aiohttp.ClientSession() as http, http.post(url, data=body) as reply:
            return reply.status, await reply.text()

    return asyncio.run(send())


def offer_sdp(direction: str) -> str:
    async def make():
        pc = RTCPeerConnection()
        if direction == "recvonly":
            pc.addTransceiver("video", direction="recvonly")
        else:
            pc.addTransceiver(camera_clip([np.zeros((90, 160, 3), np.uint8)]), direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("offer", b"not json", "not JSON"),
        ("offer", b"[1, 2]", "expected JSON"),
        ("watch", b'{"sdp": 5, "type": "offer"}', "expected JSON"),
        ("offer", b'{"sdp": "v=0", "type": "answer"}', "type must be 'offer'"),
        ("offer", b'{"sdp": "garbage\\r\\nmore", "type": "offer"}', "bad offer"),
        ("watch", b'{"sdp": "", "type": "offer"}', "bad offer"),
        (
            "offer",
            b'{"sdp": "v=0\\r\\nm=video x UDP/TLS/RTP/SAVPF 96\\r\\n", "type": "offer"}',
            "bad offer",
        ),
        ("offer", "recvonly", "sends no video"),
        ("watch", "sendrecv", "receive-only"),
    ],
)
def test_a_malformed_offer_gets_400_and_the_server_keeps_serving(server, path, body, message):
    if isinstance(body, str):
        body = json.dumps({"sdp": offer_sdp(body), "type": "offer"}).encode()
    status, text = post(server.url + path, body)
    assert status == 400 and message in text, (status, text)
    assert server.sessions == []

    async def page():
        async with aiohttp.ClientSession() as http, http.get(server.url) as reply:
            return reply.status, await reply.text()

    status, text = asyncio.run(page())
    assert status == 200 and "Use my camera" in text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("webrtc://127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("webrtc://0.0.0.0", ("0.0.0.0", 8080)),
        ("webrtc://:9001", ("127.0.0.1", 9001)),
        ("webrtc://[::1]:9002/", ("::1", 9002)),
        ("webrtc://", ("127.0.0.1", 8080)),
    ],
)
def test_webrtc_urls_parse_with_defaults(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "webrtc://host:port",
        "webrtc://host:99999",
        "rtmp://host/live",
        "webrtc://h/path",
    ],
)
def test_a_bad_webrtc_url_is_a_one_line_output_error(url):
    with pytest.raises(OutputError, match="bad WebRTC output") as error:
        WebRtcSink(url)
    assert "\n" not in str(error.value)


def test_a_port_in_use_is_an_output_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OutputError, match=f"cannot serve on 127.0.0.1:{port}"):
            WebRtcSink(f"webrtc://127.0.0.1:{port}", log=lambda *_: None)
    assert not any(thread.name == "veil-webrtc" for thread in threading.enumerate())


def test_the_sink_broadcasts_what_is_written_and_refuses_cameras(clip):
    sink = WebRtcSink("webrtc://127.0.0.1:0", log=lambda *_: None)
    stop = threading.Event()

    def write():  # as the graph's sink thread would
        number = 0
        while not stop.is_set():
            image = clip[number % len(clip)].copy()
            timecode.stamp(image, number)
            sink.write(Frame(image=image, pts=number * 3600, time_base=CLOCK, index=number))
            number += 1
            time.sleep(1 / FPS)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        status, text = post(sink.url + "offer", json.dumps({"sdp": "v=0", "type": "offer"}).encode())
        assert status == 409 and "only broadcasts" in text

        async def watch():
            pc, watched = await connect(sink.url, "watch", received=Received())
            await watched.wait_for(FPS)
            await pc.close()
            return watched

        watched = asyncio.run(watch())
        numbers = sorted(watched.numbered)
        assert len(numbers) >= FPS // 2 and numbers == sorted(set(numbers))
    finally:
        stop.set()
        writer.join(timeout=5)
        sink.close()
    assert sink.frames > FPS


def test_without_aiortc_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['aiortc'] = None\n"
        "from veil.errors import MissingDependency\n"
        "try:\n    import veil.stream.io.webrtc\n"
        "except MissingDependency as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "pip install 'veil[webrtc]'" in result.stdout, result.stderr


def test_serve_prints_the_url_serves_the_page_and_stops_on_ctrl_c(tmp_path):
    # A test run that a script started in the background inherits "ignore SIGINT" from its
    # shell, and Python then leaves Ctrl-C ignored: give veil Ctrl-C as a terminal would.
    as_from_a_terminal = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = ['veil', 'serve', '--port', '0']; runpy.run_module('veil.cli', run_name='__main__')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", as_from_a_terminal],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("veil: serving on http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[3]

        async def page():
            async with aiohttp.ClientSession() as http, http.get(url) as reply:
                return reply.status

        assert asyncio.run(page()) == 200
        process.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "veil: stopping" in out, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
