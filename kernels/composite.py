"""Launch ``composite.cu`` and its reference: every de-identified crop of a frame blended
back through the feathered alpha in one launch, as ``veil.stream.anonymisers.synth.paste`` does face by face."""

from __future__ import annotations

import numpy as np

from veil.kernels.loader import beside, grid_for, module_for

BLOCK = (16, 16, 1)


def paste_rois(matrices: np.ndarray, height: int, width: int) -> np.ndarray:
    """N x 4 int32 (left, top, right, bottom): the frame box ``paste`` may change for each
    face (all zeros for a face off the frame). The kernel writes nothing outside them."""
    from veil.stream.anonymisers.synth import paste_box

    rois = np.zeros((len(matrices), 4), np.int32)
    for i, matrix in enumerate(matrices):
        rois[i] = paste_box(matrix, height, width) or (0, 0, 0, 0)
    return rois


def composite(frame, crops, matrices: np.ndarray, alpha) -> None:
    """Blend ``crops`` (N x S x S x 3 float32 BGR, 0..255) into ``frame`` (H x W x 3 uint8
    BGR, in place) through ``alpha`` (S x S float32), face after face. ``matrices`` (N x 2 x 3,
    frame pixel -> crop pixel: the alignment matrices) are numpy on the host, where the
    regions are computed. numpy frames run on the CPU through the shim; torch CUDA tensors
    on the GPU (``alpha`` may stay numpy: it is copied beside the frame)."""
    if len(frame.shape) != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be H x W x 3, got {tuple(frame.shape)}")
    if len(crops.shape) != 4 or tuple(crops.shape[2:]) != (crops.shape[1], 3):
        raise ValueError(f"crops must be N x S x S x 3, got {tuple(crops.shape)}")
    height, width, _ = frame.shape
    count, size = crops.shape[0], crops.shape[1]
    if not isinstance(matrices, np.ndarray) or matrices.shape != (count, 2, 3):
        raise ValueError(f"matrices must be a numpy {count}x2x3 array, got {getattr(matrices, 'shape', type(matrices).__name__)}")
    if tuple(alpha.shape) != (size, size):
        raise ValueError(f"alpha must be {size}x{size}, got {tuple(alpha.shape)}")
    matrices = np.ascontiguousarray(matrices, np.float32)
    rois = paste_rois(matrices, height, width)
    used = rois[rois[:, 2] > rois[:, 0]]
    if not len(used):
        return
    left, top = used[:, :2].min(0)
    right, bottom = used[:, 2:].max(0)
    module_for("composite", frame).launch(
        "composite_faces", grid_for((right - left, bottom - top, 1), BLOCK), BLOCK,
        frame, height, width, int(left), int(top),
        crops, beside(frame, matrices), beside(frame, rois), count, beside(frame, alpha), size,
    )  # fmt: skip


def composite_reference(frame: np.ndarray, crops: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """What the CPU pipeline runs: ``paste`` (align.SIZE crops, align.BLEND_ALPHA) face by face."""
    from veil.stream.anonymisers.synth import paste  # the whole synth anonymiser: needed by the reference only, not to launch

    out = frame.copy()
    for crop, matrix in zip(crops, matrices, strict=True):
        paste(out, crop, matrix)
    return out
