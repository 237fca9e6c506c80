"""A face's region, as the CPU anonymiser and the obfuscate kernels both hide it: the box
grown by its margin and feather, clipped to the frame, with the mask ellipse inside."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Region:
    """The ROI (left, top, right, bottom; frame pixels, clipped), the mask's centre and
    half sizes, and the face's size (the longer side of its box)."""

    left: int
    top: int
    right: int
    bottom: int
    cx: float
    cy: float
    half_w: float
    half_h: float
    face: float


def feathered_mask(region: Region, shape: str, feather: float) -> np.ndarray:
    """ROI-sized alpha (HxWx1 float32): 1 inside the grown face region ("ellipse" or "box"),
    falling to 0 across the feather band."""
    xs = (np.arange(region.left, region.right, dtype=np.float32) + 0.5 - region.cx) / region.half_w
    ys = (np.arange(region.top, region.bottom, dtype=np.float32) + 0.5 - region.cy) / region.half_h
    if shape == "ellipse":
        radius = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    else:
        radius = np.maximum(np.abs(xs)[None, :], np.abs(ys)[:, None])
    if feather == 0:
        alpha = (radius <= 1).astype(np.float32)
    else:
        alpha = np.clip((1 + feather - radius) / feather, 0, 1)
    return alpha[:, :, None]


CONTOUR_GRID = 128  # pixels across the grid a contour mask is drawn on


def contour_region(outline: np.ndarray, grow: float, feather_px: float, height: int, width: int) -> Region | None:
    """The region of a mask that follows a face's outline (Kx2 frame pixels), grown by
    ``grow`` pixels and feathered over ``feather_px`` more; None if off the frame. Its centre
    and half sizes are the grown outline's box (the contour mask is CPU only)."""
    low, high = outline.min(axis=0), outline.max(axis=0)
    reach = grow + feather_px
    left, top = (int(v) for v in np.floor(low - reach))
    right, bottom = (int(v) for v in np.ceil(high + reach))
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if right <= left or bottom <= top:
        return None
    (cx, cy), (half_w, half_h) = (low + high) / 2, (high - low) / 2 + grow
    return Region(left, top, right, bottom, float(cx), float(cy), float(half_w), float(half_h), float(max(high - low)))


def contour_mask(region: Region, outline: np.ndarray, grow: float, feather_px: float) -> np.ndarray:
    """ROI-sized alpha (HxWx1 float32): 1 inside the outline and ``grow`` pixels around it,
    falling to 0 across ``feather_px`` more.

    Drawn at most CONTOUR_GRID pixels across and scaled up: the distance transform is the
    cost, and at full size it took most of a 720p frame's anonymising time. A coarse pixel
    is marked inside when any part of it is, so the mask never shrinks."""
    height, width = region.bottom - region.top, region.right - region.left
    scale = min(1.0, CONTOUR_GRID / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    inside = np.zeros(size[::-1], np.uint8)
    corners = np.rint((outline - (region.left, region.top)) * scale * 16).astype(np.int32)  # 4 bits of sub-pixel position
    cv2.fillPoly(inside, [corners], 1, lineType=cv2.LINE_8, shift=4)
    cv2.polylines(inside, [corners], True, 1, lineType=cv2.LINE_8, shift=4)
    outside = cv2.distanceTransform(1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) / scale  # frame pixels to the outline
    if feather_px <= 0:
        alpha = (outside <= grow).astype(np.float32)
    else:
        alpha = np.clip((grow + feather_px - outside) / feather_px, 0, 1)
    if scale < 1:
        alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    return alpha[:, :, None]
