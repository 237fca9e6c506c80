"""Classic anonymisers: gaussian blur, pixelation and solid fill on a feathered
ellipse (or box) around each face.

Strength is relative to the face: the face is reduced to a fixed number of
"cells" across whatever its size in pixels, so a big face is not left
recognisable by a blur tuned for small ones. Pixels where the mask is zero are
copied unchanged, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from veil.errors import InputError
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.limits import LIMITS

MODES = ("blur", "pixelate", "solid")
ALL_MODES = (*MODES, "synth")  # synth: a generated face (stream/anonymisers/synth.py)
SHAPES = ("ellipse", "box")

# Cells across the face at strength 1 (the weakest strength a run may use: stream/limits.py).
# benchmarks/STRENGTH.md, on 430 faces 32 to 112 px high (identity crops, video, the
# faces installed packages ship): blur at 3 cells and pixelation at 4 were matched to
# their own original by dlib's recogniser 0 times, and found again by the privacy gate 0
# times. Pixelation at 6 cells (the old default) was found again on 2 of 125 faces 32 px
# high, at 8.6 cells on 23; blur stays at 0 down to 6 cells.
BLUR_CELLS = 3.0
PIXELATE_CELLS = 4.0
SOLID_BGR = (128, 128, 128)


@dataclass(frozen=True)
class Anonymiser:
    mode: str = "blur"
    shape: str = "ellipse"
    margin: float = 0.4  # added on each side, as a fraction of the face box
    feather: float = 0.15  # soft edge outside the margin, as a fraction of the grown box
    strength: float = 1.0  # >1 obscures more

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown mode '{self.mode}'; choose one of {', '.join(MODES)}")
        if self.shape not in SHAPES:
            raise InputError(f"unknown mask shape '{self.shape}'; choose one of {', '.join(SHAPES)}")
        # Any finite positive strength is maths; what a run may use is veil.stream.limits' (Options
        # checks it): benchmarks/strength.py measures weaker ones to find that floor.
        if not (math.isfinite(self.strength) and self.strength > 0):
            raise InputError(f"strength must be a finite number above 0, got {self.strength!r}")
        LIMITS["margin"].check(self.margin)
        if not 0 <= self.feather <= 1:
            raise InputError(f"feather must be a number from 0 to 1, got {self.feather!r}")

    def apply(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """A copy of ``image`` with every face in ``faces`` obscured."""
        out = image.copy()
        for box in faces.boxes:
            self._obscure(out, box)
        return out

    def region(self, box, height: int, width: int) -> tuple | None:
        """Where a face's mask reaches, clipped to the frame, and its ellipse: (left, top,
        right, bottom, cx, cy, half_w, half_h, face size); None if off the frame. The GPU
        kernels (kernels/obfuscate.py) take the same regions."""
        x1, y1, x2, y2 = (float(v) for v in box)
        face = max(x2 - x1, y2 - y1, 1.0)
        half_w = (x2 - x1) / 2 + self.margin * (x2 - x1)
        half_h = (y2 - y1) / 2 + self.margin * (y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        reach = 1.0 + self.feather
        left, right = int(np.floor(cx - half_w * reach)), int(np.ceil(cx + half_w * reach))
        top, bottom = int(np.floor(cy - half_h * reach)), int(np.ceil(cy + half_h * reach))
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, width), min(bottom, height)
        if right <= left or bottom <= top or half_w <= 0 or half_h <= 0:
            return None
        return left, top, right, bottom, cx, cy, max(half_w, 0.5), max(half_h, 0.5), face

    def _obscure(self, image: np.ndarray, box: np.ndarray) -> None:
        region = self.region(box, *image.shape[:2])
        if region is None:
            return
        left, top, right, bottom, cx, cy, half_w, half_h, face = region
        roi = image[top:bottom, left:right]
        alpha = self._mask(left, top, right, bottom, cx, cy, half_w, half_h)
        hidden = self._hidden(roi, face)
        blended = roi.astype(np.float32) * (1 - alpha) + hidden.astype(np.float32) * alpha
        image[top:bottom, left:right] = np.rint(blended).astype(np.uint8)

    def _mask(self, left, top, right, bottom, cx, cy, half_w, half_h) -> np.ndarray:
        """1 inside the grown face region, falling to 0 across the feather band."""
        xs = (np.arange(left, right, dtype=np.float32) + 0.5 - cx) / half_w
        ys = (np.arange(top, bottom, dtype=np.float32) + 0.5 - cy) / half_h
        if self.shape == "ellipse":
            radius = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
        else:
            radius = np.maximum(np.abs(xs)[None, :], np.abs(ys)[:, None])
        if self.feather == 0:
            alpha = (radius <= 1).astype(np.float32)
        else:
            alpha = np.clip((1 + self.feather - radius) / self.feather, 0, 1)
        return alpha[:, :, None]

    def _hidden(self, roi: np.ndarray, face: float) -> np.ndarray:
        """The obscured version of the whole region."""
        h, w = roi.shape[:2]
        if self.mode == "solid":
            return np.broadcast_to(np.array(SOLID_BGR, np.uint8), roi.shape)
        cells = (BLUR_CELLS if self.mode == "blur" else PIXELATE_CELLS) / self.strength
        scale = min(0.5, cells / face)  # even a tiny face is at least halved
        small = cv2.resize(roi, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if self.mode == "pixelate":
            return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        # Blur at the cell scale, then come back up in two smooth steps: a full-size
        # gaussian this wide would cost tens of milliseconds on a large face.
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=1.0, borderType=cv2.BORDER_REPLICATE)
        mid = cv2.resize(small, (small.shape[1] * 4, small.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
        mid = cv2.GaussianBlur(mid, (0, 0), sigmaX=2.0, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR)


def cover_whole_frame(frame: Frame) -> Frame:
    """The fallback for a frame whose faces are not known: pixelate all of it. Wherever
    the frame failed on the GPU path, its picture is brought to the host as BGR first."""
    image = host_bgr(frame.image)
    h, w = image.shape[:2]
    blocks = 16
    small = cv2.resize(image, (max(1, w * blocks // max(h, w)), max(1, h * blocks // max(h, w))), interpolation=cv2.INTER_AREA)
    return frame.replace(image=cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST))


def host_bgr(image) -> np.ndarray:
    """A frame's picture as host BGR: from a device tensor (the GPU path), or from the
    I420 planes (H*3/2 x W) that path hands to encoders."""
    if not isinstance(image, np.ndarray):
        image = image.cpu().numpy()
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420) if image.ndim == 2 else image
