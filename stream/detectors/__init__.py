"""Face detectors: one interface, built by name.

Every detector returns ``Faces`` in the input image's pixel coordinates, with YuNet's
landmark order, track_ids -1 and detected True.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from veil.errors import InputError
from veil.stream.faces import Faces

DETECTOR_NAMES = ("yunet", "centerface", "mediapipe", "mediapipe-short", "thorough")  # thorough: yunet and centerface, for datasets


class Detector(Protocol):
    def detect(self, image_bgr_uint8: np.ndarray) -> Faces:
        """Faces in an HxWx3 uint8 BGR image; raises InputError for anything else."""


def detector_class(name: str) -> type:
    """The class of the detector called ``name`` (its INPUT_SIZE and SCORE_THRESHOLD are
    the detector's own settings)."""
    if name == "yunet":
        from veil.stream.detectors.yunet import YuNet

        return YuNet
    if name == "centerface":
        from veil.stream.detectors.centerface import CenterFace

        return CenterFace
    if name in ("mediapipe", "mediapipe-short"):
        from veil.stream.detectors.blazeface import BlazeFace, BlazeFaceShort

        return BlazeFace if name == "mediapipe" else BlazeFaceShort
    if name == "thorough":
        from veil.stream.detectors.thorough import Thorough

        return Thorough
    raise InputError(f"unknown detector {name!r}; valid names: {', '.join(DETECTOR_NAMES)}")


def make_detector(name: str = "yunet", backend: str = "onnxruntime", device: str = "cpu", **options) -> Detector:
    """The detector called ``name`` on an engine backend and device (veil.engines.runtime); other
    options go to its constructor (input_size, tiles, ...)."""
    return detector_class(name)(backend=backend, device=device, **options)
