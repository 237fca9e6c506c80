"""`veil serve`: the WebRTC page, browser cameras in, anonymised video back
(veil.stream.io.webrtc); every camera's graph is the live pipeline, all sharing one detector."""

from __future__ import annotations

import time

from veil.stream.controls import LiveControls
from veil.stream.io.webrtc import WebRtcServer
from veil.stream.jobs.live import run_live
from veil.stream.options import Options
from veil.stream.pipeline import live_detector


def camera_graphs(options: Options, detector=None):
    """What the server runs for each camera: the live pipeline of ``options``, with the
    camera's controls when the server gives it some."""
    detector = detector or live_detector(options)
    return lambda source, sink, log, controls=None: run_live(source, sink, options, detector, log=log, controls=controls)


def serve(host: str, port: int, options: Options, *, log=print) -> None:
    """``veil serve``: the page, cameras in, anonymised video out, until Ctrl-C."""
    options.anonymiser()  # a bad mode or shape fails before the model loads
    options.people()  # and a --keep reference without a clear face
    server = WebRtcServer(host, port, run_graph=camera_graphs(options), controls=lambda: LiveControls(options), log=log).start()
    try:  # from here on, Ctrl-C must reach server.stop(): its loop thread keeps the process alive
        log(f"veil: serving on {server.url} (Ctrl-C to stop)")
        if host not in ("127.0.0.1", "::1", "localhost"):
            log("veil: browsers share a camera only with https or localhost pages; from other machines, Watch works, Use my camera does not")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM is how a server is meant to stop
    finally:
        log("veil: stopping")
        server.stop()
