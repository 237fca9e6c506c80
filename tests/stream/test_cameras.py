"""A site end to end against real servers on 127.0.0.1: an RTSP camera (GStreamer's RTSP
server) restreamed to nginx-rtmp and recorded, a file camera recorded with its sound, a
camera that cannot be reached and one that is garbage. The RTSP camera reboots mid-stream.
No frame that leaves (restream, recordings, the status page's thumbnails) shows a face; the
broken cameras are shown down with their error and hold nobody up; status JSON and /metrics
say what happened; Chromium renders the status page."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import av
import cv2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require, wait_for
from tests.known_faces import judge_every_frame, numbered_clip
from tests.stream.test_browser import CHROMIUM
from veil.stream.cameras import LocalSite, Site, StatusServer
from veil.stream.recovery.keys import generate, load_private
from veil.stream.recovery.restore import open_for
from veil.stream.recovery.sidecar import sidecar_path
from veil.testing import timecode
from veil.testing.privacy import decoded_frames
from veil.testing.servers import GST_RTSP, NGINX_RTMP, Player, RtmpServer, RtspServer, free_port, nginx_rtmp_installed, rtsp_server_installed


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read()


@pytest.fixture
def servers(tmp_path):
    require(NGINX_RTMP, nginx_rtmp_installed())
    require(GST_RTSP, rtsp_server_installed())
    pictures, truth = numbered_clip(tmp_path / "numbered.mp4", 4.0)
    rtmp = RtmpServer(tmp_path)
    rtsp = RtspServer(tmp_path, pictures, rate=10)
    yield pictures, truth, rtsp, rtmp
    rtsp.stop()
    rtmp.stop()


def test_a_site_of_cameras_survives_a_camera_reboot_and_shows_no_face_anywhere(servers, tmp_path, gate):
    pictures, truth, rtsp, rtmp = servers
    (tmp_path / "junk.mp4").write_bytes(os.urandom(20000))
    generate(tmp_path / "controller")
    status_port = free_port()
    (tmp_path / "site.toml").write_text(f"""
[status]
listen = "127.0.0.1:{status_port}"
[record]
folder = "recordings"
segment = 3
recovery-keys = ["controller.pub"]
[[camera]]
name = "door"
source = "{rtsp.url}"
outputs = ["{rtmp.url('door')}"]
record = true
[[camera]]
name = "lobby"
source = "numbered.mp4"
record = true
[[camera]]
name = "yard"
source = "rtsp://127.0.0.1:{free_port()}/cam"
record = true
[[camera]]
name = "junk"
source = "junk.mp4"
record = true
""")
    site = Site.load(tmp_path / "site.toml")
    lines: list[str] = []
    cameras = LocalSite(site.cameras, batch_wait_s=site.batch_wait_s, log=lines.append)
    assert len(cameras.detectors) == 1  # one detector for all four: their frames batch
    status = StatusServer(site.status, cameras.statuses, cameras.thumbnail).start()
    player = Player(rtmp.url("door"), seconds=40)

    def by_name() -> dict:
        return {s["name"]: s for s in json.loads(get(status.url + "status"))["cameras"]}

    cameras.start()
    player.start()
    try:
        up = wait_for("door and lobby live", lambda: (s := by_name()) and s["door"]["frames_out"] > 20 and s["lobby"]["frames_out"] > 20 and s)
        assert up["door"]["state"] == "live" and up["door"]["connected"]
        rtsp.stop()  # the camera reboots
        away = wait_for("door shown away", lambda: (s := by_name())["door"]["state"] != "live" and s)
        assert not away["door"]["connected"] and away["door"]["fps_in"] == 0
        time.sleep(2.0)
        rtsp.start()
        back = wait_for("door back", lambda: (s := by_name())["door"]["state"] == "live" and s["door"]["reconnects"] >= 1 and s)
        before = back["door"]["frames_out"]
        back = wait_for("door flowing again", lambda: (s := by_name())["door"]["frames_out"] > before + 20 and s)
        for broken in ("yard", "junk"):
            assert back[broken]["state"] in ("down", "connecting") and back[broken]["frames_out"] == 0
            assert back[broken]["last_error"], back[broken]
        assert back["door"]["covered"] > 0  # the reboot was covered, not passed through
        metrics = {sample.name: sample for family in text_string_to_metric_families(get(status.url + "metrics").decode())
                   for sample in family.samples if sample.labels.get("camera") == "door"}  # fmt: skip
        assert metrics["veil_camera_reconnects_total"].value >= 1
        assert metrics["veil_camera_frames_written_total"].value >= before
        assert metrics["veil_camera_up"].value == 1
        assert "veil_camera_latency_seconds_count" in metrics
        assert json.loads(get(status.url + "status/junk"))["name"] == "junk"
        page, screenshot = render(status.url, tmp_path)
    finally:
        cameras.stop()
        status.stop()
        player.join(timeout=45)

    for name in ("door", "lobby", "yard", "junk"):
        assert f'id="camera-{name}"' in page
    assert 'data-state="live"' in page and 'data-state="down"' in page
    assert len(gate.detect(screenshot)) == 0, "the status page's thumbnails show a face"

    names = [path.name for path in (tmp_path / "recordings").iterdir()]
    assert not [name for name in names if ".partial" in name], names  # stopping names the last segments (and their sidecars)
    recordings = sorted((tmp_path / "recordings").glob("*.mkv"))
    assert sorted(sidecar_path(path).name for path in recordings) == sorted(name for name in names if name.endswith(".veilrec"))
    assert not [name for name in names if name.startswith(("yard", "junk"))], names
    door = [path for path in recordings if path.name.startswith("door-")]
    lobby = [path for path in recordings if path.name.startswith("lobby-")]
    assert len(door) >= 3 and len(lobby) >= 3, names
    with av.open(str(lobby[0])) as container:
        assert container.streams.audio, "the file camera's recording keeps its sound"
    key = load_private(tmp_path / "controller.key")
    sealed = [open_for(path, key) for path in door + lobby]  # each segment opens with its own sidecar
    assert sum(bool(found.tracks()) for found in sealed) >= len(sealed) // 2
    images = [image for path in door + lobby for _, image in decoded_frames(path, every=2)]
    assert player.video_frames > 30, f"only {player.video_frames} frames of the restream came back"
    images += player.images[::2]
    covered = [image for image in images if timecode.read(image) is None]  # pixelated whole while the camera was away
    assert covered and all(len(gate.detect(image)) == 0 for image in covered)
    judged, raw, found_again = judge_every_frame([image for image in images if timecode.read(image) is not None], pictures, truth, gate)
    assert judged > 60
    assert raw == [] and found_again == [], (raw[:5], found_again[:5])


def render(url: str, tmp_path) -> tuple[str, "cv2.Mat"]:
    """The status page as headless Chromium draws it: (its DOM after the scripts ran, a screenshot)."""
    require("Chromium (Debian package chromium)", CHROMIUM is not None)
    common = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1400,1000",
              "--force-device-scale-factor=1", "--virtual-time-budget=4000", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    page = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True).stdout
    shot = tmp_path / "status.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=60, check=True)
    return page, cv2.imread(str(shot))
