"""RTMP in and out through a real nginx-rtmp server on 127.0.0.1: what comes back has
no face and has its audio; a source that vanishes is covered and picked up again; a
server restart is republished; a malformed stream is a clear error."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import av
import pytest

from tests.conftest import require
from tests.known_faces import judge_every_frame, numbered_clip
from veil.errors import InputError
from veil.stream.jobs import run
from veil.stream.options import Options
from veil.testing.clips import make_example_clip
from veil.testing.privacy import decoded_frames
from veil.testing.servers import NGINX_RTMP, Player, RtmpServer, free_port, nginx_rtmp_installed, publish


@pytest.fixture
def rtmp(tmp_path):
    require(NGINX_RTMP, nginx_rtmp_installed())
    server = RtmpServer(tmp_path)
    yield server
    server.stop()


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def find(self, pattern: str) -> list[str]:
        return [line for line in self if re.search(pattern, line)]


def faces_in(images, gate) -> int:
    return sum(len(gate.detect(image)) for image in images)


def test_published_stream_has_no_face_and_keeps_its_audio(rtmp, tmp_path, gate):
    clip = tmp_path / "faces.mp4"
    pictures, truth = numbered_clip(clip, 6.0)
    player = Player(rtmp.url("out"), seconds=15)
    player.start()
    run(str(clip), rtmp.url("out"), Options(progress=False), log=Log())
    player.join(timeout=20)
    # The player may join late (it retries until the stream is published; the server
    # then starts it at the last keyframe), and a loaded machine drops frames at the
    # source: what matters is that every frame that arrives has no face and has its sound.
    assert player.video_frames >= 50, f"only {player.video_frames} frames came back"
    judged, raw, found_again = judge_every_frame(player.images, pictures, truth, gate)
    assert judged == player.video_frames
    assert raw == [], f"known faces left as they were: {raw[:5]}"
    assert found_again == [], f"the gate finds faces of the input again in frames {found_again}"
    seconds_of_sound = player.audio_frames * 1024 / 48000
    seconds_of_video = player.video_frames / 25
    assert seconds_of_sound >= 0.8 * seconds_of_video, "the audio arrives with the video"


def test_a_lost_source_is_covered_meanwhile_and_picked_up_again(rtmp, tmp_path, gate):
    clip = tmp_path / "camera.mp4"
    make_example_clip(clip, width=640, height=360, seconds=6.0)
    log = Log()

    def camera_with_a_hiccup():
        publish(rtmp.url("in"), clip)  # 6 s, then the camera drops out for 2 s
        time.sleep(2.0)
        publish(rtmp.url("in"), clip)

    camera = threading.Thread(target=camera_with_a_hiccup, daemon=True)
    camera.start()
    time.sleep(1.0)  # let the camera start publishing
    recording = tmp_path / "out.mkv"
    with pytest.raises(InputError, match="giving up"):
        run(rtmp.url("in"), str(recording), Options(progress=False, reconnect_s=3.0), log=log)
    camera.join(timeout=15)
    assert log.find("silent|lost"), log
    assert log.find("is back after"), "\n".join(log)
    covered = int(re.search(r"(\d+) covered whole", log.find("veil: live:")[-1]).group(1))
    assert covered >= 5, "the gap is filled with covered frames, not left empty or raw"
    partial = tmp_path / "out.partial.mkv"  # it gave up: the recording is kept, marked partial
    images = [image for _, image in decoded_frames(partial)]  # every frame
    assert len(images) >= 100
    assert faces_in(images, gate) == 0


def test_output_is_republished_after_the_server_restarts(rtmp, example_clip, tmp_path):
    long_clip = tmp_path / "long.mp4"
    make_example_clip(long_clip, width=320, height=180, seconds=7.0)
    log = Log()

    def restart_server():
        time.sleep(2.0)
        rtmp.stop()
        time.sleep(1.0)
        rtmp.start()

    restarter = threading.Thread(target=restart_server, daemon=True)
    restarter.start()
    after_restart = Player(rtmp.url("out"), seconds=8)
    veil = threading.Thread(target=run, args=(str(long_clip), rtmp.url("out"), Options(progress=False)), kwargs={"log": log})
    veil.start()
    restarter.join(timeout=10)
    after_restart.start()
    veil.join(timeout=30)
    after_restart.join(timeout=10)
    assert log.find("lost"), log
    assert log.find("republished"), log
    assert after_restart.video_frames >= 20, "viewers get the stream again after the restart"


def test_a_malformed_stream_is_a_clear_error_not_a_crash(tmp_path):
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))

    def send_garbage():
        connection, _ = listener.accept()
        with connection:
            connection.sendall(bytes(range(256)) * 400)

    threading.Thread(target=send_garbage, daemon=True).start()
    result = subprocess.run(
        [sys.executable, "-m", "veil", "run", f"tcp://127.0.0.1:{port}", "-o", str(tmp_path / "out.mkv")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    listener.close()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("veil: error:") and "tcp://127.0.0.1" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir()), "no output file is left behind"


def test_publishing_to_a_server_that_is_not_there_fails_at_once(example_clip):
    clip, _ = example_clip
    url = f"rtmp://127.0.0.1:{free_port()}/live/out"
    with pytest.raises(Exception, match="cannot publish to rtmp://") as error:
        run(str(clip), url, Options(progress=False), log=Log())
    assert error.type.__name__ == "OutputError"


def test_rtmp_stream_plays_in_ffmpeg_tools(rtmp, example_clip):
    """What nginx relays is a standard stream: H.264 + AAC in FLV."""
    clip, _ = example_clip
    player = Player(rtmp.url("probe"), seconds=8)
    player.start()
    codecs = {}

    def probe():
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not codecs:
            try:
                with av.open(rtmp.url("probe"), timeout=(3.0, 3.0)) as container:
                    codecs.update({s.type: s.codec_context.name for s in container.streams})
            except (av.FFmpegError, OSError):
                time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    run(str(clip), rtmp.url("probe"), Options(progress=False), log=Log())
    prober.join(timeout=10)
    player.join(timeout=10)
    assert codecs == {"video": "h264", "audio": "aac"}
