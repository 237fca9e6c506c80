"""`veil camera`: a webcam in, its anonymised picture out as a virtual camera that
Zoom, Meet or OBS can pick (pyvirtualcam: v4l2loopback on Linux, the OBS virtual
camera on Windows and macOS, Unity Capture on Windows).

Only anonymised frames reach the virtual camera: the sink sits after the graph's
anonymise stage and its fallback cover, like every other sink. A virtual camera
carries no sound, so live audio is not written.

The virtual camera is opened once before anything slow (model load, webcam start),
so a machine without one fails at once with exit 2 and the command to install it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

import cv2
import numpy as np

from veil.errors import InputError, MissingDependency, OutputError
from veil.stream.elements import Sink
from veil.stream.frame import Frame

# Size and rate of the first, fail-fast opening when --size/--fps do not say.
PROBE_SIZE = (640, 480)
PROBE_FPS = 30.0


def _pyvirtualcam():
    try:
        import pyvirtualcam
    except ImportError:
        raise MissingDependency("the virtual camera needs pyvirtualcam: pip install 'veil[vcam]'") from None
    return pyvirtualcam


def install_hint(device: str | None = None, platform: str | None = None) -> str:
    """What to install so that pyvirtualcam finds a virtual camera on ``platform``."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        number = re.fullmatch(r"/dev/video(\d+)", device or "")
        nr = number.group(1) if number else "10"
        return (
            "install v4l2loopback: sudo apt install v4l2loopback-dkms && "
            f'sudo modprobe v4l2loopback devices=1 video_nr={nr} card_label="Veil" '
            "exclusive_caps=1"
        )
    if platform == "win32":
        return (
            "install OBS Studio 26 or later (https://obsproject.com; Veil writes to its "
            "Virtual Camera) or Unity Capture (https://github.com/schellingb/UnityCapture)"
        )
    if platform == "darwin":
        return "install OBS Studio 26 or later (https://obsproject.com), click Start Virtual Camera once, then Stop, and quit OBS"
    return f"pyvirtualcam has no virtual camera for {platform} (Linux, Windows, macOS)"


def _reason(error: BaseException) -> str:
    """pyvirtualcam's text on one line (it writes one line per backend tried)."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


class VirtualCameraSink(Sink):
    """Writes BGR frames to a virtual camera through pyvirtualcam.

    ``camera`` replaces ``pyvirtualcam.Camera`` (same signature); tests pass a
    recording one. Frames of another size than the camera's are scaled into it with
    black bars: a virtual camera's format is fixed while apps watch it, a webcam that
    reconnects may come back at another size, and the frames are already anonymised,
    so scaling them cannot reveal anything, while stopping would drop the user from
    the call.
    """

    takes_i420 = False  # the camera is opened for BGR: the GPU path downloads BGR for it

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        *,
        device: str | None = None,
        camera: Callable | None = None,
        log: Callable[[str], None] = print,
    ):
        if width <= 0 or height <= 0 or fps <= 0:
            raise OutputError(f"a virtual camera needs a positive size and rate, got {width}x{height} at {fps:g} fps")
        pyvirtualcam = _pyvirtualcam()
        open_camera = camera or pyvirtualcam.Camera
        try:
            self._camera = open_camera(
                width=width,
                height=height,
                fps=fps,
                fmt=pyvirtualcam.PixelFormat.BGR,
                device=device,
            )
        except (RuntimeError, ValueError, OSError) as error:
            where = f" {device}" if device else ""
            raise OutputError(f"no virtual camera{where} ({_reason(error)}); to get one, {install_hint(device)}") from None
        self.width, self.height, self.fps, self.log = width, height, fps, log
        self.device: str = self._camera.device
        self.frames = 0
        self._scaled_from: tuple[int, int] | None = None

    def write(self, frame: Frame) -> None:
        if self._camera is None:
            raise OutputError(f"virtual camera {self.device} is closed")
        image = frame.image
        if frame.layout != "bgr" or frame.place != "host" or image.dtype != np.uint8:
            raise OutputError(f"virtual camera {self.device} takes HxWx3 uint8 BGR frames on the host, got a {frame.layout} frame on the {frame.place} of {image.dtype}")
        if image.shape[:2] != (self.height, self.width):
            image = self._fit(image)
        try:
            self._camera.send(image)
        except (RuntimeError, ValueError, OSError) as error:
            raise OutputError(f"virtual camera {self.device} stopped taking frames: {_reason(error)}") from None
        self.frames += 1

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` scaled to fit the camera's size, centred on black."""
        height, width = image.shape[:2]
        if self._scaled_from != (width, height):
            self._scaled_from = (width, height)
            self.log(f"veil: camera frames are {width}x{height} now; scaling them into the virtual camera's fixed {self.width}x{self.height}")
        scale = min(self.width / width, self.height / height)
        w = max(1, min(self.width, round(width * scale)))
        h = max(1, min(self.height, round(height * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        canvas = np.zeros((self.height, self.width, 3), np.uint8)
        x, y = (self.width - w) // 2, (self.height - h) // 2
        canvas[y : y + h, x : x + w] = cv2.resize(image, (w, h), interpolation=interpolation)
        return canvas

    def close(self) -> None:
        """Close the camera; later calls do nothing."""
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.close()
        except (RuntimeError, OSError) as error:
            raise OutputError(f"cannot close virtual camera {self.device}: {_reason(error)}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_size(size: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", size)
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise InputError(f"a camera size is WIDTHxHEIGHT, e.g. 1280x720; got '{size}'")
    return int(match.group(1)), int(match.group(2))
