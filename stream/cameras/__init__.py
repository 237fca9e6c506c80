"""Surveillance sites: many cameras in one process (``LocalSite``), read from a site file
(``Site``), with a status page and Prometheus metrics (``StatusServer``); ``veil.stream.cluster``
spreads them over a Ray cluster.

    site = Site.load("site.toml")
    run_site(site)  # until Ctrl-C
"""

from __future__ import annotations

import time
from collections.abc import Callable

from veil.stream.cameras.local import LocalSite
from veil.stream.cameras.site import CameraSpec, Site
from veil.stream.cameras.status import StatusServer

__all__ = ["CameraSpec", "LocalSite", "Site", "StatusServer", "run_site", "serve_until_stopped"]


def run_site(site: Site, *, log: Callable[[str], None] = print) -> None:
    """Every camera of ``site`` in this process, with its status page, until Ctrl-C."""
    cameras = LocalSite(site.cameras, batch_wait_s=site.batch_wait_s, log=log)
    cameras.start()
    serve_until_stopped(site, cameras, f"veil: {len(site.cameras)} cameras", log=log)


def serve_until_stopped(site: Site, cameras, intro: str, *, log: Callable[[str], None] = print) -> None:
    """The status page of running ``cameras`` (a LocalSite or a RaySite) until Ctrl-C, then
    every camera stopped and its outputs finished."""
    status = StatusServer(site.status, cameras.statuses, cameras.thumbnail).start() if site.status else None
    log(intro + (f"; status on {status.url}" if status else "") + " (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        log("veil: stopping; finishing every camera's outputs")
    finally:
        cameras.stop()
        if status is not None:
            status.stop()
