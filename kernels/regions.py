"""A face's region, as the CPU anonymiser and the obfuscate kernels both hide it: the box
grown by its margin and feather, clipped to the frame, with the mask ellipse inside."""

from __future__ import annotations

from dataclasses import dataclass

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
