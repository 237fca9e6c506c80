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
from veil.stream.controls import LiveControls
from veil.stream.io.webrtc import WebRtcServer
from veil.stream.options import Options
from veil.testing import timecode
from veil.testing.clips import Actor, render_frames
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


def launch(profile: Path, y4m: Path, url: str, log, *, allow_camera: bool = True) -> subprocess.Popen:
    """Headless Chromium on ``url``, its camera playing ``y4m`` (refused unless ``allow_camera``)."""
    consent = ["--use-fake-ui-for-media-stream"] if allow_camera else ["--deny-permission-prompts"]
    return subprocess.Popen(
        [
            CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            *consent, "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
            "--force-device-scale-factor=1", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", url,
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def close(browser: subprocess.Popen, log) -> None:
    browser.terminate()
    try:
        browser.wait(timeout=10)
    except subprocess.TimeoutExpired:
        browser.kill()
        browser.wait(timeout=10)
    log.close()


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
        browser = launch(profile, y4m, url + "?auto=camera", log)
        try:
            camera, watch, boxes, screenshot = asyncio.run(drive(profile, browser, url))
        finally:
            close(browser, log)
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


# You, large and near the camera, and someone behind you.
CALL_CAST = (Actor("astronaut", 1.4, (0.02, 0.12), (0.06, 0.14), 0.0, 10.0), Actor("camera", 0.9, (0.66, 0.3), (0.62, 0.32), 0.0, 10.0))


async def until(tools: DevTools, what: str, check, timeout: float = TIMEOUT_S) -> dict:
    """The page's ``window.veil`` once ``check`` holds of it; AssertionError after ``timeout``."""
    deadline, status = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        status = json.loads(await tools.evaluate("JSON.stringify(window.veil)") or "{}")
        if check(status):
            return status
        await asyncio.sleep(0.25)
    raise AssertionError(f"the page never showed {what}: {status}")


async def use_controls(profile: Path, browser: subprocess.Popen, url: str, marks: dict, server) -> dict:
    """Drive the page's own controls: solid, then keep my face; photograph it; stop the server."""
    port = await devtools_port(profile, browser)
    found = {}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(await page_socket(http, port, url), max_msg_size=0) as socket:
            tools = DevTools(socket)
            found["first"] = await until(tools, "video and a readout", lambda s: s.get("framesDecoded", 0) >= FPS and (s.get("controls") or {}).get("fps", 0) > 0)
            found["readout"] = await tools.evaluate("document.getElementById('readout').textContent")
            found["link"] = await tools.evaluate("document.getElementById('viewer-link').href")
            await tools.evaluate("const m = document.getElementById('mode'); m.value = 'solid'; m.dispatchEvent(new Event('change'))")
            await until(tools, "solid", lambda s: s["controls"]["mode"] == "solid")
            marks["solid"] = time.monotonic()
            await asyncio.sleep(1.0)
            await tools.evaluate("document.getElementById('keep').click()")
            found["kept"] = await until(tools, "a kept face", lambda s: s["controls"]["keeping"] == "you" and s["controls"]["kept"] >= 1)
            marks["kept"] = time.monotonic()
            await asyncio.sleep(1.5)
            boxes = json.loads(await tools.evaluate(VIDEO_BOXES))
            shot = await tools.call("Page.captureScreenshot", format="png")
            found["remote"] = region(cv2.imdecode(np.frombuffer(base64.b64decode(shot["data"]), np.uint8), cv2.IMREAD_COLOR), boxes["remote"])
            server.stop()  # the server goes away: the page must say so
            found["away"] = await until(tools, "that the server is away", lambda s: s.get("state") == "error" and s.get("error"), timeout=20)
    return found


def test_the_page_changes_mode_keeps_your_face_and_hides_the_one_behind_you(tmp_path):
    images = []
    truth = []
    for number, (image, boxes) in enumerate(render_frames(WIDTH, HEIGHT, FPS, 10.0, cast=CALL_CAST)):
        timecode.stamp(image, number)
        images.append(image)
        truth.append(boxes)
    y4m = tmp_path / "call.y4m"
    write_y4m(y4m, images, FPS)
    gate = IndependentDetector()
    outputs: list[tuple[float, int, np.ndarray]] = []  # (when, clip frame, what left the server)

    def tap(frame):
        number = timecode.read(frame.image)
        if number is not None:
            outputs.append((time.monotonic(), number, frame.image))

    options = Options(progress=False)
    profile, log, marks = tmp_path / "profile", (tmp_path / "chromium.log").open("w"), {}
    server = WebRtcServer("127.0.0.1", 0, run_graph=camera_graphs(options), controls=lambda: LiveControls(options), tap=tap,
                          log=lambda *_: None).start()  # fmt: skip
    try:
        browser = launch(profile, y4m, server.url + "?auto=camera", log)
        try:
            found = asyncio.run(use_controls(profile, browser, server.url, marks, server))
        finally:
            close(browser, log)
    finally:
        server.stop()

    assert found["link"].endswith("/?auto=watch") and "fps" in found["readout"] and "hidden" in found["readout"], found
    you, behind = 0, 1
    solid = [(n, image) for t, n, image in outputs if marks["solid"] + 0.3 < t < marks["kept"] - 0.5]
    assert len(solid) >= 5
    for number, image in solid:  # solid: the face behind you is one flat colour
        x1, y1, x2, y2 = (int(v) for v in truth[number][behind])
        inner = image[y1 + (y2 - y1) // 4 : y2 - (y2 - y1) // 4, x1 + (x2 - x1) // 4 : x2 - (x2 - x1) // 4]
        assert inner.reshape(-1, 3).std(axis=0).max() < 1.0, number
    kept = [(n, image) for t, n, image in outputs if t > marks["kept"] + 0.5]
    assert len(kept) >= 10
    shown = 0
    for number, image in kept:  # you are back; the one behind you never
        for box in gate.detect(image):
            assert not inside(box, truth[number][behind]), f"the face behind you shows on frame {number}"
            shown += inside(box, truth[number][you])
    assert shown >= 0.8 * len(kept), f"your face shows on {shown} of {len(kept)} frames"
    assert found["kept"]["controls"]["kept"] >= 1 and found["kept"]["controls"]["hidden"] >= 1
    on_page = gate.detect(found["remote"])
    assert len(on_page) >= 1  # the page shows your face, and only yours: it is the larger one, on the left
    assert all((box[0] + box[2]) / 2 < WIDTH / 2 for box in on_page), on_page
    assert "server" in found["away"]["error"], found["away"]


def inside(box, truth) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3]


def test_a_refused_camera_says_so(clip, tmp_path):
    y4m, _ = clip
    log = (tmp_path / "chromium.log").open("w")
    with WebRtcServer("127.0.0.1", 0, run_graph=camera_graphs(Options(progress=False)), log=lambda *_: None) as server:
        browser = launch(tmp_path / "profile", y4m, server.url + "?auto=camera", log, allow_camera=False)

        async def status():
            port = await devtools_port(tmp_path / "profile", browser)
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(await page_socket(http, port, server.url), max_msg_size=0) as socket:
                    return await until(DevTools(socket), "an error", lambda s: s.get("state") == "error")

        try:
            refused = asyncio.run(status())
        finally:
            close(browser, log)
    assert refused["error"].startswith("the camera was refused"), refused
