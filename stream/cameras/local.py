"""All the cameras of one machine in one process: each its own graph and threads, sharing
one detector per detector setting (frames that arrive together run as one batch) and one
anonymiser per hiding setting (synth's generator batches the same way)."""

from __future__ import annotations

from collections.abc import Callable

from veil.engines.onnx_models import available_cores
from veil.stream.cameras.camera import Camera
from veil.stream.cameras.site import CameraSpec
from veil.stream.pipeline import live_detector


class LocalSite:
    def __init__(self, cameras: list[CameraSpec], *, batch_wait_s: float, log: Callable[[str], None] = print):
        detectors, anonymisers = {}, {}
        self.cameras: dict[str, Camera] = {}
        for spec in cameras:
            options = spec.options()
            key = (options.detector, tuple(sorted(options.detector_options.items())))
            if key not in detectors:
                # One worker runs each batch for all cameras: it gets every core, where one
                # camera's own detector gets half (see live_detector).
                detectors[key] = live_detector(options, batch_wait_s=batch_wait_s, intra_op_threads=available_cores())
            options.share_anonymiser(anonymisers)
            self.cameras[spec.name] = Camera(spec, options, detectors[key], log=log)
        self.detectors = list(detectors.values())

    def start(self) -> LocalSite:
        for camera in self.cameras.values():
            camera.start()
        return self

    def stop(self) -> None:
        """Every camera finishes its outputs; they stop side by side, not one after another."""
        for camera in self.cameras.values():
            camera.stop()
        for camera in self.cameras.values():
            camera.join()

    def statuses(self) -> list[dict]:
        return [camera.status() for camera in self.cameras.values()]

    def thumbnail(self, name: str) -> bytes | None:
        camera = self.cameras.get(name)
        return None if camera is None else camera.thumbnail()
