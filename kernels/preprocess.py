"""Launch ``preprocess.cu`` and its reference: the frame cropped, resized and normalised
straight into an engine's NCHW float32 input, every face of a frame in one launch."""

from __future__ import annotations

import cv2
import numpy as np

from veil.engines import align
from veil.kernels.loader import beside, empty, grid_for, module_for

BLOCK = (16, 16, 1)


def preprocess(frame, matrices: np.ndarray, out_size: tuple[int, int], scale: float, offset: float, swap_rb: bool, mask=None):
    """N x 3 x out_h x out_w float32: ``frame`` (H x W x 3 uint8 BGR) sampled at ``matrices``
    (N x 2 x 3 on the host, output pixel -> frame pixel), times ``scale`` plus ``offset``,
    times 1 - ``mask`` (out_h x out_w float32, or None); RGB order when ``swap_rb``.
    numpy frames run on the CPU through the shim; torch CUDA tensors on the GPU."""
    if len(frame.shape) != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be H x W x 3, got {tuple(frame.shape)}")
    height, width, _ = frame.shape
    out_h, out_w = out_size
    if not isinstance(matrices, np.ndarray) or matrices.ndim != 3 or matrices.shape[1:] != (2, 3):
        raise ValueError(f"matrices must be a numpy N x 2 x 3 array, got {getattr(matrices, 'shape', type(matrices).__name__)}")
    if mask is not None and tuple(mask.shape) != (out_h, out_w):
        raise ValueError(f"mask must be {out_h}x{out_w}, got {tuple(mask.shape)}")
    count = len(matrices)
    out = empty(frame, (count, 3, out_h, out_w), np.float32)
    module_for("preprocess", frame).launch(
        "preprocess_faces", grid_for((out_w, out_h, count), BLOCK), BLOCK,
        frame, height, width, beside(frame, np.asarray(matrices, np.float32)), None if mask is None else beside(frame, mask),
        out, count, out_h, out_w, float(scale), float(offset), int(bool(swap_rb)),
    )  # fmt: skip
    return out


def generator_input(frame, matrices: np.ndarray):
    """The image channels of the generator's input (``align.network_input``'s first three)
    for the faces at alignment ``matrices`` (N x 2 x 3, frame pixel -> crop pixel):
    masked RGB in [-1, 1]. Inverted on the host: the kernel maps output to frame."""
    inverses = np.array([cv2.invertAffineTransform(np.asarray(m, np.float32)) for m in matrices], np.float32).reshape(-1, 2, 3)
    return preprocess(frame, inverses, (align.SIZE, align.SIZE), 1 / 127.5, -1.0, True, align.FACE_MASK)


def detector_input(frame, width: int, height: int):
    """1 x 3 x height x width float32 BGR in 0..255: ``frame`` resized as cv2.resize's
    INTER_LINEAR does (half-pixel centres), without its rounding to uint8."""
    sx, sy = frame.shape[1] / width, frame.shape[0] / height
    matrix = np.array([[[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]], np.float32)
    return preprocess(frame, matrix, (height, width), 1.0, 0.0, False)


def preprocess_reference(
    frame: np.ndarray, matrices: np.ndarray, out_size: tuple[int, int], scale: float, offset: float, swap_rb: bool, mask: np.ndarray | None = None
) -> np.ndarray:
    """The same by cv2.remap on the float frame, face by face."""
    out_h, out_w = out_size
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    source = frame.astype(np.float32)[:, :, ::-1] if swap_rb else frame.astype(np.float32)
    keep = 1.0 if mask is None else 1.0 - mask
    out = []
    for m in matrices:
        map_x = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(np.float32)
        map_y = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(np.float32)
        sampled = cv2.remap(np.ascontiguousarray(source), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append((sampled * scale + offset).transpose(2, 0, 1) * keep)
    return np.stack(out).astype(np.float32)
