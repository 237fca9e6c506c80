"""Launch ``obfuscate.cu`` and its NumPy/OpenCV reference: pixelate or gaussian-blur
every face of a frame in a few batched launches. The caller gives the faces' regions
(veil.kernels.regions) and how to hide them (``Hiding``); the CPU anonymiser
(veil.stream.anonymisers.classic) computes both, so the GPU path protects faces as it does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from veil.kernels.loader import beside, empty, grid_for, module_for
from veil.kernels.regions import Region, feathered_mask

BLOCK = (16, 16, 1)
CELL_BLOCK = (4, 4, 1)  # a face has only a few cells; each thread sums a whole cell
MODES = ("pixelate", "blur")

# The CPU blur (Anonymiser._hidden) shrinks the region by INTER_AREA to a cell every
# P = 1 / min(0.5, cells / face) pixels, blurs with sigma 1 cell, upsamples 4x bilinearly,
# blurs with sigma 2 there (P / 2) and upsamples bilinearly to full size. In full-size
# pixels: a box of width P, a gaussian of sigma P, a triangle of half-width P, a gaussian
# of sigma P / 2, a triangle of half-width P / 4. Their variances add to 1.51 P^2 (sigma
# 1.23 P) and their mean frequency response is
#   sinc(P f)^3 sinc(P f / 4)^2 exp(-2 pi^2 (1.25 P^2) f^2).
# A gaussian of sigma 1.3 P passes no more than that at every frequency where either
# passes more than 1e-8 (sigma 1.25 P would pass up to 1.45x more near f = 0.77 / P),
# and, having no downscale, it folds no aliased fine detail back in.
# tests/kernels/test_obfuscate.py checks it on a real face.
BLUR_SIGMA_PER_CELL = 1.3
TRUNCATE = 3.0  # gaussian taps out to 3 sigma, as cv2.GaussianBlur does for uint8


@dataclass(frozen=True)
class Hiding:
    """How faces are hidden: "pixelate" or "blur", with ``cells`` across each face, under an
    "ellipse" or "box" mask whose soft edge is ``feather`` of the grown box wide."""

    mode: str
    cells: float
    shape: str = "ellipse"
    feather: float = 0.15


def pixelate_cells(region: Region, cells: float) -> tuple[int, int]:
    """Cells across and down the ROI: Anonymiser._hidden's INTER_AREA target size."""
    scale = min(0.5, cells / region.face)
    return max(1, round((region.right - region.left) * scale)), max(1, round((region.bottom - region.top) * scale))


def blur_taps(region: Region, cells: float) -> np.ndarray:
    """The normalised 1-D gaussian for this face (see BLUR_SIGMA_PER_CELL), float32."""
    sigma = BLUR_SIGMA_PER_CELL / min(0.5, cells / region.face)
    radius = math.ceil(TRUNCATE * sigma)
    taps = np.exp(-(np.arange(-radius, radius + 1, dtype=np.float64) ** 2) / (2 * sigma * sigma))
    return (taps / taps.sum()).astype(np.float32)


@dataclass(frozen=True)
class Plan:
    """The kernels' per-face parameters (layouts in obfuscate.cu) and scratch sizes."""

    regions: list[Region]
    ints: np.ndarray  # N x 7 int32
    ellipses: np.ndarray  # N x 4 float32
    taps: np.ndarray  # all faces' blur taps, float32 (empty for pixelate)
    scratch: int
    grid: tuple[int, int]  # the widest first-pass grid: cells (pixelate) or ROI pixels (blur)


def plan(regions: list[Region], hiding: Hiding) -> Plan:
    """Everything the launches need, from the host's regions: shared by ``obscure`` and its reference."""
    ints, taps, scratch, tap_count, grid = [], [], 0, 0, (1, 1)
    for r in regions:
        roi_w, roi_h = r.right - r.left, r.bottom - r.top
        if hiding.mode == "pixelate":
            cells_w, cells_h = pixelate_cells(r, hiding.cells)
            ints.append((r.left, r.top, r.right, r.bottom, scratch, cells_w, cells_h))
            scratch += cells_w * cells_h * 3
            grid = (max(grid[0], cells_w), max(grid[1], cells_h))
        else:
            face_taps = blur_taps(r, hiding.cells)
            ints.append((r.left, r.top, r.right, r.bottom, scratch, len(face_taps) // 2, tap_count))
            taps.append(face_taps)
            scratch += roi_w * roi_h * 3
            tap_count += len(face_taps)
            grid = (max(grid[0], roi_w), max(grid[1], roi_h))
    return Plan(
        regions,
        np.array(ints, np.int32).reshape(-1, 7),
        np.array([(r.cx, r.cy, r.half_w, r.half_h) for r in regions], np.float32).reshape(-1, 4),
        np.concatenate(taps) if taps else np.zeros(0, np.float32),
        scratch,
        grid,
    )


def _check(frame, hiding: Hiding) -> None:
    if hiding.mode not in MODES:
        raise ValueError(f"the obfuscate kernels pixelate or blur; mode '{hiding.mode}' has no kernel")
    if len(frame.shape) != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be H x W x 3 (BGR), got {tuple(frame.shape)}")


def obscure(frame, regions: list[Region], hiding: Hiding, out=None):
    """Every face region of ``frame`` (H x W x 3 uint8 BGR) pixelated or blurred as
    ``hiding`` says, into ``out``: a new array when None, or ``frame`` itself to work in
    place. The regions stay on the host. A torch CUDA tensor runs on its GPU; numpy arrays
    and torch CPU tensors run on the CPU through the shim."""
    _check(frame, hiding)
    height, width = frame.shape[:2]
    if out is None:
        out = empty(frame, (height, width, 3), np.uint8)
    elif tuple(out.shape) != tuple(frame.shape):
        raise ValueError(f"out must be {tuple(frame.shape)}, got {tuple(out.shape)}")
    p = plan(regions, hiding)
    count = len(p.regions)
    if count == 0:
        if out is not frame:
            out[...] = frame
        return out
    module = module_for("obfuscate", frame)
    ints, ellipses = beside(frame, p.ints), beside(frame, p.ellipses)
    cells = rows = taps = None
    if hiding.mode == "pixelate":
        cells = empty(frame, (p.scratch,), np.uint8)
        module.launch("pixelate_cells", grid_for((*p.grid, count), CELL_BLOCK), CELL_BLOCK, frame, width, ints, cells, count)
    else:
        taps, rows = beside(frame, p.taps), empty(frame, (p.scratch,), np.float32)
        module.launch("blur_rows", grid_for((*p.grid, count), BLOCK), BLOCK, frame, width, ints, taps, rows, count)
    # In place only the faces' bounding span changes; into a new array every pixel is written.
    if out is frame:
        x0, y0 = int(p.ints[:, 0].min()), int(p.ints[:, 1].min())
        span_w, span_h = int(p.ints[:, 2].max()) - x0, int(p.ints[:, 3].max()) - y0
    else:
        x0, y0, span_w, span_h = 0, 0, width, height
    module.launch(
        "obscure_blend", grid_for((span_w, span_h, 1), BLOCK), BLOCK,
        frame, out, width, x0, y0, span_w, span_h, ints, ellipses, count, int(hiding.shape == "box"), float(hiding.feather),
        MODES.index(hiding.mode), cells, rows, taps,
    )  # fmt: skip
    return out


def _hidden(roi: np.ndarray, p: Plan, i: int, hiding: Hiding) -> np.ndarray:
    """Face ``i``'s hidden ROI by OpenCV: the CPU anonymiser's own INTER_AREA cells and
    INTER_NEAREST upsampling, or the same separable gaussian with edges repeated."""
    roi_h, roi_w = roi.shape[:2]
    if hiding.mode == "pixelate":
        small = cv2.resize(roi, tuple(int(n) for n in p.ints[i, 5:7]), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (roi_w, roi_h), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    radius, start = p.ints[i, 5:7]
    taps = p.taps[start : start + 2 * radius + 1]
    return cv2.sepFilter2D(roi.astype(np.float32), cv2.CV_32F, taps, taps, borderType=cv2.BORDER_REPLICATE)


def obscure_reference(frame: np.ndarray, regions: list[Region], hiding: Hiding) -> np.ndarray:
    """What ``obscure`` computes, by NumPy and OpenCV: each face hidden from the input
    frame, with the CPU anonymiser's feathered mask, blended in order with rounding after
    each face."""
    _check(frame, hiding)
    p = plan(regions, hiding)
    out = frame.astype(np.float32)
    for i, r in enumerate(p.regions):
        hidden = _hidden(frame[r.top : r.bottom, r.left : r.right], p, i, hiding)
        alpha = feathered_mask(r, hiding.shape, hiding.feather)
        roi = out[r.top : r.bottom, r.left : r.right]
        roi[...] = np.rint(np.clip(roi * (1 - alpha) + hidden * alpha, 0, 255))
    return out.astype(np.uint8)
