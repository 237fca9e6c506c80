"""`veil camera`: a webcam in, a virtual camera out (veil.stream.io.vcam)."""

from __future__ import annotations

from collections.abc import Callable

from veil.errors import InputError
from veil.stream.graph import RunReport
from veil.stream.io.vcam import PROBE_FPS, PROBE_SIZE, VirtualCameraSink, parse_size
from veil.stream.jobs.live import open_live_source, run_live
from veil.stream.options import Options
from veil.stream.pipeline import live_detector


def run_camera(
    device: str,
    output_device: str | None,
    options: Options,
    *,
    size: str | None = None,
    fps: float | None = None,
    camera: Callable | None = None,
    log: Callable[[str], None] = print,
) -> RunReport:
    """Anonymise webcam ``device`` into a virtual camera until Ctrl-C or the webcam is
    gone; raise OutputError (exit 2) at once when there is no virtual camera.
    ``camera`` replaces ``pyvirtualcam.Camera``, as in ``VirtualCameraSink``."""
    options.anonymiser()  # a bad mode or shape fails before any device opens
    options.people()  # and a --keep or --only reference without a clear face
    width, height = parse_size(size) if size else PROBE_SIZE
    if fps is not None and fps <= 0:
        raise InputError(f"a camera frame rate must be positive, got {fps:g}")
    # The webcam's size is only known once it runs; open the virtual camera now at a
    # provisional size anyway, so "none installed" fails before anything slow, and
    # keep the device it picked so the real opening gets the same one.
    probe = VirtualCameraSink(width, height, fps or PROBE_FPS, device=output_device, camera=camera, log=log)
    probe.close()
    output_device = probe.device
    if output_device == device:
        raise InputError(f"the webcam and the virtual camera are both {device}; pass another --output-device")
    detector = live_detector(options)
    with open_live_source(device, options, size=f"{width}x{height}" if size else None, fps=fps, log=log) as source:
        rate = float(source.rate)
        sink = VirtualCameraSink(
            source.width,
            source.height,
            rate,
            device=output_device,
            camera=camera,
            log=log,
        )
        log(
            f"veil: {device} ({source.width}x{source.height} at {rate:g} fps) anonymised "
            f"into virtual camera {sink.device}; pick it in Zoom, Meet or OBS; Ctrl-C stops"
        )
        return run_live(source, sink, options, detector, log=log)
