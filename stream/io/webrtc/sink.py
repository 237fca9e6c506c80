"""``-o webrtc://HOST:PORT``: the pipeline's output to the viewers who press Watch."""

from __future__ import annotations

from urllib.parse import urlsplit

from veil.errors import OutputError
from veil.stream.elements import Sink
from veil.stream.frame import Frame
from veil.stream.io.webrtc.server import DEFAULT_HOST, DEFAULT_PORT, WebRtcServer


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of ``webrtc://HOST:PORT``; either part may be left out."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise OutputError(f"bad WebRTC output {url!r}: {error}") from None
    if parts.scheme != "webrtc":
        raise OutputError(f"bad WebRTC output {url!r}: expected webrtc://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise OutputError(f"bad WebRTC output {url!r}: expected webrtc://HOST:PORT")
    return parts.hostname or DEFAULT_HOST, DEFAULT_PORT if port is None else port


class WebRtcSink(Sink):
    """``-o webrtc://HOST:PORT``: serves the page, and every frame written (graph
    output, so already anonymised) goes to the viewers who press Watch."""

    def __init__(self, url: str, *, log=print):
        host, port = parse_url(url)
        self.log = log
        self.server = WebRtcServer(host, port, log=log).start()  # no run_graph: viewers only
        self.frames = 0
        log(f"veil: watch on {self.server.url}")

    @property
    def url(self) -> str:
        return self.server.url

    def write(self, frame: Frame) -> None:
        self.server.publish(frame)
        self.frames += 1

    def close(self) -> None:
        self.server.stop()
