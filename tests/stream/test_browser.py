"""The page in a real browser: headless Chromium sends a face clip as its camera
(Chromium's fake capture device plays a .y4m file), gets the anonymised video back,
and is driven and photographed over the Chrome DevTools Protocol.

Each clip frame carries its number in a timecode stamp, so a frame seen on the page
or leaving the server is compared with the very frame it was made from.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest

from tests.conftest import require
from tests.known_faces import raw_faces
from veil.commands.serve import camera_graphs
from veil.stream.io.webrtc import WebRtcServer
from veil.stream.options import Options
from veil.testing import timecode
from veil.testing.clips import render_frames
from veil.testing.privacy import IndependentDetector, leaked_faces

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def chromium_installed():
    require("Chromium (Debian package chromium)", CHROMIUM is not None)


FPS = 25
WIDTH, HEIGHT = 640, 360
TIMEOUT_S = 60.0
TRUTH = [boxes for _, boxes in render_frames(WIDTH, HEIGHT, FPS, 3.0)]  # the faces of each frame of the clip


def write_y4m(path: Path, images: list[np.ndarray], fps: int) -> None:
    """A raw 4:2:0 .y4m clip, the format Chromium's fake camera plays (looped)."""
    height, width = images[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for image in images:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """(the .y4m file, its frames): 3 s of the example clip, frames numbered."""
    images = []
    for number, (image, _) in enumerate(render_frames(WIDTH, HEIGHT, FPS, 3.0)):
        timecode.stamp(image, number)
        images.append(image)
    path = tmp_path_factory.mktemp("browser") / "camera.y4m"
    write_y4m(path, images, FPS)
    return path, images


class DevTools:
    """Just enough of the Chrome DevTools Protocol: commands on one page target."""

    def __init__(self, socket):
        self.socket = socket
        self.ids = itertools.count(1)

    async def call(self, method: str, **params):
        number = next(self.ids)
        await self.socket.send_json({"id": number, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.socket.receive_json(), TIMEOUT_S)
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


async def devtools_port(profile: Path, browser: subprocess.Popen) -> str:
    """Chromium's DevTools port, from the file it writes once it listens."""
    deadline = time.monotonic() + TIMEOUT_S
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        assert browser.poll() is None, "Chromium exited; see its log"
        if port_file.exists() and port_file.read_text().strip():
            return port_file.read_text().split()[0]
        await asyncio.sleep(0.2)
    raise AssertionError("Chromium did not open its DevTools port")


async def page_socket(http, port: str, url: str) -> str:
    """The DevTools websocket of the page at ``url``, once Chromium has opened it."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as reply:
            for target in await reply.json():
                if target.get("type") == "page" and target["url"].startswith(url):
                    return target["webSocketDebuggerUrl"]
        await asyncio.sleep(0.2)
    raise AssertionError(f"Chromium did not open {url}")


async def wait_for_frames(tools: DevTools, frames: int) -> dict:
    """The page's status (``window.veil``) once it has decoded ``frames`` frames,
    or has failed, or the time is up."""
    deadline = time.monotonic() + TIMEOUT_S
    status = {}
    while time.monotonic() < deadline:
        status = json.loads(await tools.evaluate("JSON.stringify(window.veil)") or "{}")
        if status.get("error") or status.get("framesDecoded", 0) >= frames:
            break
        await asyncio.sleep(0.25)
    return status


VIDEO_BOXES = """JSON.stringify(Object.fromEntries(['local', 'remote'].map((id) => {
    const video = document.getElementById(id), box = video.getBoundingClientRect();
    return [id, {x: box.x, y: box.y, width: box.width, height: box.height,
                 scale: window.devicePixelRatio}];
})))"""


async def drive(profile: Path, browser: subprocess.Popen, url: str) -> tuple:
    """Wait until the camera page shows anonymised video and photograph it; then
    open a second tab that presses Watch. Returns (the camera page's status, the
    watching page's status, where the camera page's videos are, the photo)."""
    port = await devtools_port(profile, browser)
    async with aiohttp.ClientSession() as http:
        camera_socket = await page_socket(http, port, url + "?auto=camera")
        async with http.ws_connect(camera_socket, max_msg_size=0) as socket:
            tools = DevTools(socket)
            camera = await wait_for_frames(tools, 2 * FPS)
            boxes = json.loads(await tools.evaluate(VIDEO_BOXES))
            shot = await tools.call("Page.captureScreenshot", format="png")
            async with http.put(f"http://127.0.0.1:{port}/json/new?{url}?auto=watch") as reply:
                assert reply.status == 200, await reply.text()
            watch_socket = await page_socket(http, port, url + "?auto=watch")
            async with http.ws_connect(watch_socket, max_msg_size=0) as socket:
                watch = await wait_for_frames(DevTools(socket), FPS)
    screenshot = cv2.imdecode(np.frombuffer(base64.b64decode(shot["data"]), np.uint8), cv2.IMREAD_COLOR)
    return camera, watch, boxes, screenshot


def region(screenshot: np.ndarray, box: dict) -> np.ndarray:
    scale = box["scale"]
    x, y = round(box["x"] * scale), round(box["y"] * scale)
    return screenshot[y : y + round(box["height"] * scale), x : x + round(box["width"] * scale)]


def test_the_page_sends_the_camera_and_shows_it_back_anonymised(clip, tmp_path):
    y4m, originals = clip
    gate = IndependentDetector()
    outputs: dict[int, np.ndarray] = {}
    unnumbered: list[np.ndarray] = []  # a mask covered the stamp

    def tap(frame):  # every frame that leaves the server, in the graph's sink thread
        number = timecode.read(frame.image)
        if number is None:
            unnumbered.append(frame.image)
        else:
            outputs.setdefault(number, frame.image)

    profile = tmp_path / "profile"
    log = (tmp_path / "chromium.log").open("w")
    options = Options(progress=False)
    with WebRtcServer(
        "127.0.0.1",
        0,
        run_graph=camera_graphs(options),
        tap=tap,
        log=lambda *_: None,
    ) as server:
        url = server.url
        browser = subprocess.Popen(
            [
                CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}", "--allow-loopback-in-peer-connection",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
                "--force-device-scale-factor=1", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", url + "?auto=camera",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            camera, watch, boxes, screenshot = asyncio.run(drive(profile, browser, url))
        finally:
            browser.terminate()
            try:
                browser.wait(timeout=10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(timeout=10)
            log.close()
    cv2.imwrite(str(tmp_path / "page.png"), screenshot)  # for a look when this fails

    # The page got anonymised video back, and a second tab watching got it too.
    assert camera.get("mode") == "camera" and not camera.get("error"), camera
    assert camera["framesDecoded"] >= 2 * FPS, camera
    assert (camera["width"], camera["height"]) == (WIDTH, HEIGHT), camera
    assert watch.get("mode") == "watch" and not watch.get("error"), watch
    assert watch["framesDecoded"] >= FPS, watch

    # What the page shows: the camera preview has faces, the returned video none of them.
    local, remote = (
        region(screenshot, boxes["local"]),
        region(screenshot, boxes["remote"]),
    )
    assert remote.shape[:2] == (HEIGHT, WIDTH), boxes  # 1:1, so the stamp reads back
    assert len(gate.detect(local)) > 0, "the gate must see faces in the preview for this to mean anything"
    shown = timecode.read(remote)
    if shown is None:
        assert len(gate.detect(remote)) == 0
    else:
        faces = gate.detect(originals[shown])
        assert len(leaked_faces(faces, remote, gate)) == 0, f"faces of frame {shown} found on the page"

    # What left the server: every frame, each against the frame it was made from (the
    # clip loops, so each number once), or, where a mask covered its stamp, against none.
    assert len(outputs) >= 20, sorted(outputs)
    found = leaked = 0
    raw = []
    for number, image in sorted(outputs.items()):
        faces = gate.detect(originals[number])
        found += len(faces)
        leaked += len(leaked_faces(faces, image, gate))
        raw += raw_faces(originals[number], image, TRUTH[number])
    leaked += sum(len(gate.detect(image)) for image in unnumbered)
    assert found >= len(outputs) and leaked == 0 and raw == [], (found, leaked, raw[:5])
