"""Classic anonymisers: gaussian blur, pixelation and solid fill on a feathered
ellipse (or box) around each face, or on the face's own outline from its mesh (contour).

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
from veil.kernels.obfuscate import Hiding
from veil.kernels.regions import Region, contour_mask, contour_region, feathered_mask
from veil.stream.faces import Faces, iou_matrix
from veil.stream.frame import Frame
from veil.stream.limits import LIMITS

CLASSIC_MODES = ("blur", "pixelate", "solid")  # every mode: veil.stream.anonymisers.MODES
SHAPES = ("ellipse", "box", "contour")
# A contour is used only where the mesh agrees with the detector: its outline holds the box's
# centre and its box overlaps the detector's this much (IoU). Elsewhere the ellipse is used.
CONTOUR_AGREEMENT = 0.3

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
        if self.mode not in CLASSIC_MODES:
            raise InputError(f"unknown mode '{self.mode}'; choose one of {', '.join(CLASSIC_MODES)}")
        if self.shape not in SHAPES:
            raise InputError(f"unknown mask shape '{self.shape}'; choose one of {', '.join(SHAPES)}")
        # Any finite positive strength is maths; what a run may use is veil.stream.limits' (Options
        # checks it): benchmarks/strength.py measures weaker ones to find that floor.
        if not (math.isfinite(self.strength) and self.strength > 0):
            raise InputError(f"strength must be a finite number above 0, got {self.strength!r}")
        LIMITS["margin"].check(self.margin)
        if not 0 <= self.feather <= 1:
            raise InputError(f"feather must be a number from 0 to 1, got {self.feather!r}")

    @property
    def wants_mesh(self) -> bool:
        """Whether the faces it is given should carry their meshes (veil.stream.stages.mesh)."""
        return self.shape == "contour"

    def apply(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """A copy of ``image`` with every face in ``faces`` obscured."""
        out = image.copy()
        for box, mesh in zip(faces.boxes, faces.mesh):
            self._obscure(out, box, mesh)
        return out

    def region(self, box, height: int, width: int, mesh: np.ndarray | None = None) -> Region | None:
        """Where a face's mask reaches, clipped to the frame; None if off the frame. The GPU
        kernels (veil.kernels.obfuscate) take the same regions (ellipse and box only)."""
        outline = self.outline(box, mesh)
        if outline is not None:
            grow, feather_px = self._contour_sizes(outline)
            return contour_region(outline, grow, feather_px, height, width)
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
        return Region(left, top, right, bottom, cx, cy, max(half_w, 0.5), max(half_h, 0.5), face)

    def regions(self, boxes, height: int, width: int) -> list[Region]:
        """The regions of the faces in ``boxes`` (N x 4: x1, y1, x2, y2) that reach the frame, in order."""
        found = (self.region(box, height, width) for box in np.asarray(boxes, np.float32).reshape(-1, 4))
        return [region for region in found if region is not None]

    def outline(self, box, mesh: np.ndarray | None) -> np.ndarray | None:
        """The face's outline (Kx2: the mesh's convex hull) that a contour mask follows, or None: not a contour
        anonymiser, no confident mesh, or a mesh that does not agree with the box."""
        if self.shape != "contour" or mesh is None or not np.isfinite(mesh).all():
            return None
        outline = cv2.convexHull(mesh).reshape(-1, 2)  # the oval, and on a turned head the nose and lips past it
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        if cv2.pointPolygonTest(outline.reshape(-1, 1, 2), (float(centre[0]), float(centre[1])), False) < 0:
            return None
        spanned = np.concatenate([outline.min(axis=0), outline.max(axis=0)])
        return outline if iou_matrix(spanned, box)[0, 0] >= CONTOUR_AGREEMENT else None

    def _contour_sizes(self, outline: np.ndarray) -> tuple[float, float]:
        """Pixels a contour grows by (``margin`` of half the face) and feathers over."""
        half = float(max(outline.max(axis=0) - outline.min(axis=0))) / 2
        grow = self.margin * half
        return grow, self.feather * (half + grow)

    def hiding(self) -> Hiding:
        """What the obfuscate kernels need to hide faces as this anonymiser does."""
        return Hiding(self.mode, self.cells(), self.shape, self.feather)

    def cells(self) -> float:
        """Cells across the face (blur and pixelate)."""
        return (BLUR_CELLS if self.mode == "blur" else PIXELATE_CELLS) / self.strength

    def _obscure(self, image: np.ndarray, box: np.ndarray, mesh: np.ndarray | None = None) -> None:
        region = self.region(box, *image.shape[:2], mesh)
        if region is None:
            return
        roi = image[region.top : region.bottom, region.left : region.right]
        outline = self.outline(box, mesh)
        if outline is not None:
            alpha = contour_mask(region, outline, *self._contour_sizes(outline))
        else:
            alpha = feathered_mask(region, "box" if self.shape == "box" else "ellipse", self.feather)
        blend_into(roi, self._hidden(roi, region.face), alpha)

    def _hidden(self, roi: np.ndarray, face: float) -> np.ndarray:
        """The obscured version of the whole region."""
        h, w = roi.shape[:2]
        if self.mode == "solid":
            return np.broadcast_to(np.array(SOLID_BGR, np.uint8), roi.shape)
        scale = min(0.5, self.cells() / face)  # even a tiny face is at least halved
        small = cv2.resize(roi, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if self.mode == "pixelate":
            return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        # Blur at the cell scale, then come back up in two smooth steps: a full-size
        # gaussian this wide would cost tens of milliseconds on a large face.
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=1.0, borderType=cv2.BORDER_REPLICATE)
        mid = cv2.resize(small, (small.shape[1] * 4, small.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
        mid = cv2.GaussianBlur(mid, (0, 0), sigmaX=2.0, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR)


def blend_into(roi: np.ndarray, hidden: np.ndarray, alpha: np.ndarray) -> None:
    """``roi`` becomes ``roi * (1 - alpha) + hidden * alpha``, rounded, in place, in one
    OpenCV pass: 0.2 ms for a 312x357 region where NumPy's float blend took 2.4-2.8 ms
    (four such faces were a third of a 720p frame's time). OpenCV divides by the weights'
    sum plus 1e-5, which moves a level by one on 0.02% of the rim's values, and never where
    alpha is 0 (those pixels stay bit for bit) or 1 (those are the hidden pixels)."""
    weight = np.ascontiguousarray(alpha[:, :, 0])
    roi[...] = cv2.blendLinear(roi, np.ascontiguousarray(hidden), 1 - weight, weight)


def cover_whole_frame(frame: Frame) -> Frame:
    """The fallback for a frame whose faces are not known: pixelate all of it. Wherever
    the frame failed on the GPU path, its picture is brought to the host as BGR first."""
    image = host_bgr(frame)
    h, w = image.shape[:2]
    blocks = 16
    small = cv2.resize(image, (max(1, w * blocks // max(h, w)), max(1, h * blocks // max(h, w))), interpolation=cv2.INTER_AREA)
    return frame.replace(image=cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), layout="bgr", place="host")


def host_bgr(frame: Frame) -> np.ndarray:
    """A frame's picture as host BGR, from wherever and however it is held."""
    image = frame.image if frame.place == "host" else frame.image.cpu().numpy()
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420) if frame.layout == "i420" else image
