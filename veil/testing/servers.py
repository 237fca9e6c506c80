"""Real servers for the live tests, on 127.0.0.1: nginx with the RTMP module, GStreamer's
RTSP server as a camera, and helpers to publish and play streams with PyAV.

`.ci/run` installs them (`make servers`) and sets VEIL_REQUIRE_SERVERS=1, so in CI a
missing server fails the tests instead of skipping them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
NGINX_RTMP = "nginx with the RTMP module (Debian packages nginx, libnginx-mod-rtmp)"
SYSTEM_PYTHON = "/usr/bin/python3"
GST_RTSP = "GStreamer's RTSP server (Debian packages gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-plugins-good, gstreamer1.0-plugins-ugly)"


def nginx_rtmp_installed() -> bool:
    return Path(shutil.which("nginx") or "/usr/sbin/nginx").exists() and RTMP_MODULE.exists()


def rtsp_server_installed() -> bool:
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert all(Gst.ElementFactory.find(e) for e in ('multifilesrc', 'jpegdec', 'x264enc', 'rtph264pay'))"
    )
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class ServerProcess:
    """A server in its own process, listening on ``self.port``; stopped and started again
    on the same port, as a server that reboots."""

    port: int
    process: subprocess.Popen | None = None

    def launch(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


class RtmpServer(ServerProcess):
    """nginx-rtmp with its own config, logs and pid file in ``folder``."""

    def __init__(self, folder: Path):
        if not nginx_rtmp_installed():
            raise FileNotFoundError(f"{NGINX_RTMP} is not installed")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx, self.folder, self.port = nginx, folder, free_port()
        (folder / "nginx.conf").write_text(
            f"""
load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 128; }}
rtmp {{
    server {{
        listen 127.0.0.1:{self.port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
        }}
    }}
}}
"""
        )
        self.start()

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def start(self) -> None:
        self.launch([self.nginx, "-p", str(self.folder), "-e", str(self.folder / "error.log"), "-c", str(self.folder / "nginx.conf")])


class RtspServer(ServerProcess):
    """A looping RTSP camera at ``url`` serving ``pictures`` (BGR images) at ``rate`` frames
    a second."""

    def __init__(self, folder: Path, pictures, *, rate: int):
        if not rtsp_server_installed():
            raise FileNotFoundError(f"{GST_RTSP} is not installed")
        import cv2

        self.frames = folder / "frames"
        self.frames.mkdir(parents=True, exist_ok=True)
        for index, picture in enumerate(pictures):
            cv2.imwrite(str(self.frames / f"{index:05d}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 95])
        self.rate, self.port = rate, free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.start()

    def start(self) -> None:
        script = Path(__file__).with_name("rtsp_server.py")
        self.launch([SYSTEM_PYTHON, str(script), "--port", str(self.port), "--frames", str(self.frames), "--rate", str(self.rate)])


class Player(threading.Thread):
    """Plays a stream with PyAV in the background and keeps what arrives: decoded
    video frames (BGR, with their receive time) and the number of audio frames."""

    def __init__(self, url: str, *, seconds: float):
        super().__init__(daemon=True)
        self.url, self.seconds = url, seconds
        self.images: list = []
        self.received_at: list[float] = []
        self.audio_frames = 0
        self.video_frames = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:  # the stream may not be published yet
            try:
                with av.open(self.url, timeout=(5.0, 3.0)) as container:
                    self._play(container, deadline)
            except (av.FFmpegError, OSError) as error:
                self.error = error
                time.sleep(0.2)

    def _play(self, container, deadline: float) -> None:
        for packet in container.demux():
            for frame in packet.decode():
                if isinstance(frame, av.AudioFrame):
                    self.audio_frames += 1
                    continue
                self.images.append(frame.to_ndarray(format="bgr24"))
                self.received_at.append(time.monotonic())
                self.video_frames += 1
            if time.monotonic() > deadline:
                return


def publish(url: str, clip: Path, *, stop: threading.Event | None = None, stamp=None, loop: bool = False) -> None:
    """Send a clip to an RTMP server in real time, as an encoder would (re-encoded
    to H.264 and AAC); ``stamp(image)`` may draw on each frame first. With ``loop``
    the clip repeats on the one connection, timestamps running on, until ``stop``."""
    with av.open(url, mode="w", format="flv", timeout=5.0) as out:
        with av.open(str(clip)) as probe:
            video_in = probe.streams.video[0]
            rate, width, height, has_audio = video_in.average_rate, video_in.width, video_in.height, bool(probe.streams.audio)
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "25"}
        audio = out.add_stream("aac", rate=48000) if has_audio else None
        start, offset = time.monotonic(), 0.0
        while True:
            with av.open(str(clip)) as source:
                frames, samples, layout = 0, 0, None
                for frame in source.decode(*source.streams):
                    if stop is not None and stop.is_set():
                        break
                    seconds = offset + float(frame.pts * frame.time_base)
                    if isinstance(frame, av.VideoFrame):
                        frames += 1
                        time.sleep(max(0.0, start + seconds - time.monotonic()))
                        image = frame.to_ndarray(format="bgr24")
                        if stamp is not None:
                            stamp(image)
                        picture = av.VideoFrame.from_ndarray(image, format="bgr24")
                        picture.pts, picture.time_base = round(seconds * 1000), Fraction(1, 1000)
                        out.mux(video.encode(picture))
                    elif audio is not None:
                        samples, layout = samples + frame.samples, frame.layout.name
                        frame.pts = None
                        out.mux(audio.encode(frame))
            offset += frames / float(rate)
            if not loop or (stop is not None and stop.is_set()):
                break
            if audio is not None:  # the sound of each loop lasts exactly as long as its video
                missing = round(frames / float(rate) * 48000) - samples
                if missing > 0:
                    silence = av.AudioFrame(format="fltp", layout=layout, samples=missing)
                    for plane in silence.planes:
                        plane.update(bytes(plane.buffer_size))
                    silence.sample_rate = 48000
                    out.mux(audio.encode(silence))
        out.mux(video.encode(None))
        if audio is not None:
            out.mux(audio.encode(None))
