"""The site's HTTP face: ``/`` a page listing every camera with an anonymised thumbnail,
its state and figures; ``/status`` (and ``/status/NAME``) the same as JSON; ``/metrics`` for
Prometheus (``prometheus-client`` writes the exposition format); ``/thumbnail/NAME.jpg``.

It reads figures through two callables, so the same server shows one process's cameras or,
on a Ray head, those of the whole cluster.
"""

from __future__ import annotations

import importlib.resources
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.samples import Sample

from veil.errors import InputError

COUNTERS = {  # status key -> (metric name without _total, help)
    "frames_in": ("veil_camera_frames_received", "Frames received from the camera."),
    "frames_out": ("veil_camera_frames_written", "Anonymised frames written to the camera's outputs."),
    "dropped": ("veil_camera_frames_dropped", "Frames dropped at the source, before anonymising, to keep up."),
    "covered": ("veil_camera_frames_covered", "Frames covered whole (the camera was away or a stage failed)."),
    "reconnects": ("veil_camera_reconnects", "Times the camera's source was connected again."),
}
GAUGES = {
    "connected": ("veil_camera_up", "1 while frames arrive from the camera."),
    "fps_in": ("veil_camera_input_fps", "Frames a second received, over the last seconds."),
    "fps_out": ("veil_camera_output_fps", "Frames a second written, over the last seconds."),
    "faces": ("veil_camera_faces", "Faces masked on the last frame written."),
}


class SiteCollector:
    """Prometheus metrics made from the cameras' status at scrape time, labelled by camera."""

    def __init__(self, statuses: Callable[[], list[dict]]):
        self.statuses = statuses

    def collect(self):
        statuses = self.statuses()
        for key, (name, help_text) in COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=["camera"])
            for status in statuses:
                family.add_metric([status["name"]], status[key])
            yield family
        for key, (name, help_text) in GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=["camera"])
            for status in statuses:
                family.add_metric([status["name"]], float(status[key]))
            yield family
        latency = SummaryMetricFamily("veil_camera_latency_seconds", "Capture to output, per frame.", labels=["camera"])
        for status in statuses:
            latency.add_metric([status["name"]], status["latency_count"], status["latency_sum_s"])
            for quantile, key in (("0.5", "latency_p50_ms"), ("0.99", "latency_p99_ms")):
                if status[key] is not None:
                    labels = {"camera": status["name"], "quantile": quantile}
                    latency.samples.append(Sample("veil_camera_latency_seconds", labels, status[key] / 1000, None))
        yield latency


class StatusServer:
    """Serves the page, the JSON and the metrics on ``listen`` ("host:port") in a thread."""

    def __init__(self, listen: str, statuses: Callable[[], list[dict]], thumbnail: Callable[[str], bytes | None]):
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise InputError(f"status address {listen!r}: expected host:port, e.g. 127.0.0.1:8090")
        registry = CollectorRegistry()
        registry.register(SiteCollector(statuses))
        page = (importlib.resources.files("veil.stream.cameras") / "status.html").read_bytes()
        handler = _handler(statuses, thumbnail, registry, page)
        try:
            self.server = ThreadingHTTPServer((host, int(port)), handler)
        except OSError as error:
            raise InputError(f"cannot serve the status page on {listen}: {error.strerror}") from None
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, name="veil-status", daemon=True)

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def _handler(statuses, thumbnail, registry, page: bytes) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            path = unquote(urlsplit(self.path).path)
            if path in ("/", "/index.html"):
                return self._send(200, "text/html; charset=utf-8", page)
            if path == "/metrics":
                return self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            if path == "/status":
                return self._json(200, {"cameras": statuses()})
            if path.startswith("/status/"):
                found = [s for s in statuses() if s["name"] == path.removeprefix("/status/")]
                return self._json(200, found[0]) if found else self._json(404, {"error": "no such camera"})
            if path.startswith("/thumbnail/") and path.endswith(".jpg"):
                jpeg = thumbnail(path.removeprefix("/thumbnail/").removesuffix(".jpg"))
                return self._send(200, "image/jpeg", jpeg) if jpeg else self._json(404, {"error": "no picture yet"})
            return self._json(404, {"error": "not found"})

        def _json(self, code: int, value) -> None:
            self._send(code, "application/json", json.dumps(value).encode())

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            """Quiet: a page that polls every second would fill the log."""

    return Handler
