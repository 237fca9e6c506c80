"""Cameras and folders on a real local Ray cluster: a head and a second node on 127.0.0.1,
one CPU each. A camera whose actor is killed comes back; no frame of any recording, before,
during or after, shows a face."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest

from tests.conftest import require, wait_for
from tests.known_faces import judge_every_frame, numbered_clip
from veil.errors import InputError
from veil.stream.cameras import Site
from veil.stream.options import Options
from veil.testing.privacy import decoded_frames
from veil.testing.servers import free_port

pytest.importorskip("ray", reason="Ray is the cluster extra: pip install 'veil[cluster]'")
RAY = str(Path(sys.executable).parent / "ray")
NODE = ["--num-cpus", "1", "--object-store-memory", "80000000", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]


@pytest.fixture(scope="module")
def cluster():
    """The address of a head and a second node, each with one CPU, stopped afterwards."""
    require("Ray's command line (pip install 'veil[cluster]')", os.path.exists(RAY))
    import ray

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    subprocess.run([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", *NODE], check=True, env=env,
                   capture_output=True, timeout=120)
    try:
        subprocess.run([RAY, "start", "--address", address, *NODE], check=True, env=env, capture_output=True, timeout=120)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def by_name(statuses) -> dict:
    return {status["name"]: status for status in statuses}


def test_a_camera_whose_actor_dies_comes_back_and_no_recording_shows_a_face(cluster, tmp_path, gate):
    from veil.stream.cluster import RaySite, connect

    clip = tmp_path / "numbered.mp4"
    pictures, truth = numbered_clip(clip, 4.0)
    (tmp_path / "site.toml").write_text(f"""
[cluster]
cameras-per-actor = 1
[record]
folder = "recordings"
segment = 2
[[camera]]
name = "lobby"
source = "{clip}"
record = true
[[camera]]
name = "gate"
source = "{clip}"
record = true
""")
    site = Site.load(tmp_path / "site.toml")
    ray = connect(cluster)
    cameras = RaySite(site, ray, log=lambda line: None)
    try:
        up = wait_for("both cameras live", lambda: (s := by_name(cameras.statuses())) and all(c["state"] == "live" and c["frames_out"] > 5 for c in s.values()) and s)
        assert up["lobby"]["node"] != up["gate"]["node"]  # one CPU a node: one camera on each
        first = up["lobby"]["recording"]
        wait_for("lobby's first segment finished", lambda: by_name(cameras.statuses())["lobby"]["recording"] not in (first, None))
        before = by_name(cameras.statuses())["gate"]["frames_out"]
        ray.kill(cameras.groups[0][1], no_restart=False)  # lobby's actor dies; Ray starts it again
        away = wait_for("lobby shown restarting", lambda: by_name(cameras.statuses())["lobby"]["state"] != "live" and by_name(cameras.statuses()))
        assert not away["lobby"]["connected"]
        back = wait_for("lobby live again", lambda: (s := by_name(cameras.statuses()))["lobby"]["state"] == "live" and s["lobby"]["frames_out"] > 5 and s)
        assert back["gate"]["frames_out"] > before  # the other camera went on meanwhile
    finally:
        cameras.stop()
        ray.shutdown()
    recordings = sorted((tmp_path / "recordings").iterdir())
    lobby = [p for p in recordings if p.name.startswith("lobby-")]
    assert first in [p.name for p in lobby] and len([p for p in lobby if ".partial" not in p.name]) >= 2  # before the kill, and after it
    images = [image for path in recordings if ".partial" not in path.name for _, image in decoded_frames(path, every=3)]
    for path in (p for p in recordings if ".partial" in p.name):  # cut off by the kill: what can be read of it
        images += readable_frames(path)
    judged, raw, found_again = judge_every_frame(images, pictures, truth, gate)
    assert judged > 20 and raw == [] and found_again == []


def readable_frames(path) -> list:
    images = []
    try:
        images += [image for _, image in decoded_frames(path)]
    except av.FFmpegError:
        pass
    return images


def test_a_folder_spreads_over_the_cluster_and_a_bad_file_does_not_stop_the_others(cluster, tmp_path, example_clip):
    from veil.stream.cluster import run_folder_on_ray

    folder = tmp_path / "in"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(example_clip[0], folder / "one.mp4")
    shutil.copy(example_clip[0], folder / "day2" / "two.mp4")
    import skimage.data

    cv2.imwrite(str(folder / "astronaut.jpg"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    (folder / "broken.mp4").write_bytes(os.urandom(4096))
    lines = []
    with pytest.raises(InputError, match=r"1 of 4 files failed: broken.mp4"):
        run_folder_on_ray(folder, tmp_path / "out", Options(progress=False), cluster, log=lines.append)
    assert lines[-1] == "veil: folder done: 3 of 4 files anonymised"
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["astronaut.jpg", "day2/two.mp4", "one.mp4"]
