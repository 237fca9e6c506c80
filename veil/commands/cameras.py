"""`veil cameras SITE`: every camera of a site file, in this process or on a Ray cluster."""

from __future__ import annotations

from veil.stream.cameras import Site, run_site


def run_cameras(path: str, *, status: str | None = None, ray: str | None = None, log=print) -> None:
    site = Site.load(path)  # every fault in the file is reported before anything opens
    if status is not None:
        site.status = status
    if ray is None:
        return run_site(site, log=log)
    from veil.stream.cluster import run_site_on_ray

    run_site_on_ray(site, ray, log=log)
