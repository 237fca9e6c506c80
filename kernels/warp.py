"""Launch ``warp.cu`` and its NumPy/OpenCV reference: the per-face backward warp that
carries a keyframe's de-identified crop along the original face's motion."""

from __future__ import annotations

import cv2
import numpy as np

from veil.kernels.loader import empty, grid_for, module_for

BLOCK = (16, 16, 1)


def warp(src, matrices, flow=None, out_size: tuple[int, int] | None = None):
    """``src`` N x H x W x C float32 sampled at ``matrices`` (N x 2 x 3, output pixel ->
    source pixel) applied to each output pixel plus ``flow`` (N x h x w x 2, or None).
    numpy in runs on the CPU through the shim; torch CUDA tensors in run on the GPU."""
    count, src_h, src_w, channels = src.shape
    out_h, out_w = out_size or ((flow.shape[1], flow.shape[2]) if flow is not None else (src_h, src_w))
    if tuple(matrices.shape) != (count, 2, 3):
        raise ValueError(f"matrices must be {count}x2x3, got {tuple(matrices.shape)}")
    if flow is not None and tuple(flow.shape) != (count, out_h, out_w, 2):
        raise ValueError(f"flow must be {count}x{out_h}x{out_w}x2, got {tuple(flow.shape)}")
    out = empty(src, (count, out_h, out_w, channels), np.float32)
    module_for("warp", src).launch(
        "warp_affine_flow", grid_for((out_w, out_h, count), BLOCK), BLOCK,
        src, src_h, src_w, channels, matrices, flow, out, count, out_h, out_w,
    )  # fmt: skip
    return out


def warp_reference(src: np.ndarray, matrices: np.ndarray, flow: np.ndarray | None = None,
                   out_size: tuple[int, int] | None = None) -> np.ndarray:
    """The same warp by cv2.remap, face by face: what the CPU pipeline runs."""
    count, src_h, src_w, _ = src.shape
    out_h, out_w = out_size or ((flow.shape[1], flow.shape[2]) if flow is not None else (src_h, src_w))
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    out = []
    for i in range(count):
        px, py = (xs, ys) if flow is None else (xs + flow[i, ..., 0], ys + flow[i, ..., 1])
        m = matrices[i]
        map_x = (m[0, 0] * px + m[0, 1] * py + m[0, 2]).astype(np.float32)
        map_y = (m[1, 0] * px + m[1, 1] * py + m[1, 2]).astype(np.float32)
        warped = cv2.remap(src[i], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append(warped.reshape(out_h, out_w, -1))
    return np.stack(out)
