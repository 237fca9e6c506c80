"""Launch ``colour.cu`` and its NumPy reference: NV12 and I420 (4:2:0 YUV, limited range,
BT.601 or BT.709) to and from BGR, so frames from and to hardware codecs stay on the GPU.

Planes are 2-D uint8 arrays of rows x pitch (a pitched hardware surface as it lies in
memory); the visible width and height may be smaller than the plane.
"""

from __future__ import annotations

import numpy as np

from veil.kernels.loader import empty, grid_for, module_for

BLOCK = (16, 16, 1)  # threads of 2 x 2 pixel blocks
MATRICES = {601: (0.299, 0.114), 709: (0.2126, 0.0722)}  # luma weights of red and blue


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"4:2:0 frames need an even width and height, got {width}x{height}")


def _check_matrix(matrix: int) -> None:
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be 601 (BT.601) or 709 (BT.709), got {matrix!r}")


def _check_plane(plane, name: str, rows: int, row_bytes: int) -> int:
    """The plane's pitch, after checking it holds ``rows`` rows of ``row_bytes`` bytes."""
    shape = tuple(plane.shape)
    if len(shape) != 2 or shape[0] < rows or shape[1] < row_bytes:
        raise ValueError(f"the {name} plane must be 2-D, at least {rows} rows x {row_bytes} bytes (rows x pitch), got {shape}")
    return shape[1]


def _check_bgr(bgr) -> tuple[int, int]:
    if len(bgr.shape) != 3 or bgr.shape[2] != 3:
        raise ValueError(f"bgr must be H x W x 3, got {tuple(bgr.shape)}")
    height, width = int(bgr.shape[0]), int(bgr.shape[1])
    _check_size(width, height)
    return width, height


def nv12_to_bgr(y, uv, width: int | None = None, height: int | None = None, matrix: int = 601):
    """BGR (height x width x 3 uint8) from an NV12 Y plane and interleaved UV plane;
    width and height default to the Y plane's."""
    width, height = int(y.shape[1] if width is None else width), int(y.shape[0] if height is None else height)
    _check_size(width, height)
    _check_matrix(matrix)
    y_pitch = _check_plane(y, "Y", height, width)
    uv_pitch = _check_plane(uv, "UV", height // 2, width)
    bgr = empty(y, (height, width, 3), np.uint8)
    module_for("colour", y).launch(
        "nv12_to_bgr", grid_for((width // 2, height // 2, 1), BLOCK), BLOCK, y, y_pitch, uv, uv_pitch, bgr, width, height, matrix
    )
    return bgr


def i420_to_bgr(y, u, v, width: int | None = None, height: int | None = None, matrix: int = 601):
    """BGR (height x width x 3 uint8) from I420's Y, U and V planes; width and height
    default to the Y plane's."""
    width, height = int(y.shape[1] if width is None else width), int(y.shape[0] if height is None else height)
    _check_size(width, height)
    _check_matrix(matrix)
    y_pitch = _check_plane(y, "Y", height, width)
    u_pitch = _check_plane(u, "U", height // 2, width // 2)
    v_pitch = _check_plane(v, "V", height // 2, width // 2)
    bgr = empty(y, (height, width, 3), np.uint8)
    module_for("colour", y).launch(
        "i420_to_bgr", grid_for((width // 2, height // 2, 1), BLOCK), BLOCK,
        y, y_pitch, u, u_pitch, v, v_pitch, bgr, width, height, matrix,
    )  # fmt: skip
    return bgr


def bgr_to_nv12(bgr, matrix: int = 601, out: tuple | None = None) -> tuple:
    """(Y, UV) NV12 planes of ``bgr``, written into ``out`` (pitched planes, e.g. an
    encoder's input surface) or into new unpadded ones."""
    width, height = _check_bgr(bgr)
    _check_matrix(matrix)
    y, uv = out if out is not None else (empty(bgr, (height, width), np.uint8), empty(bgr, (height // 2, width), np.uint8))
    y_pitch = _check_plane(y, "Y", height, width)
    uv_pitch = _check_plane(uv, "UV", height // 2, width)
    module_for("colour", bgr).launch(
        "bgr_to_nv12", grid_for((width // 2, height // 2, 1), BLOCK), BLOCK, bgr, width, height, y, y_pitch, uv, uv_pitch, matrix
    )
    return y, uv


def bgr_to_i420(bgr, matrix: int = 601, out: tuple | None = None) -> tuple:
    """(Y, U, V) I420 planes of ``bgr``, written into ``out`` (pitched planes) or into new
    unpadded ones."""
    width, height = _check_bgr(bgr)
    _check_matrix(matrix)
    if out is None:
        out = (empty(bgr, (height, width), np.uint8), *(empty(bgr, (height // 2, width // 2), np.uint8) for _ in range(2)))
    y, u, v = out
    y_pitch = _check_plane(y, "Y", height, width)
    u_pitch = _check_plane(u, "U", height // 2, width // 2)
    v_pitch = _check_plane(v, "V", height // 2, width // 2)
    module_for("colour", bgr).launch(
        "bgr_to_i420", grid_for((width // 2, height // 2, 1), BLOCK), BLOCK,
        bgr, width, height, y, y_pitch, u, u_pitch, v, v_pitch, matrix,
    )  # fmt: skip
    return y, u, v


def _to_byte(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def yuv420_to_bgr_reference(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: int = 601) -> np.ndarray:
    """BGR from tight H x W luma and H/2 x W/2 chroma, in float64: the textbook
    limited-range equations, each chroma sample repeated over its 2 x 2 block."""
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    luma = (y.astype(np.float64) - 16) * (255 / 219)
    pb = np.repeat(np.repeat((u.astype(np.float64) - 128) * (255 / 224), 2, 0), 2, 1)
    pr = np.repeat(np.repeat((v.astype(np.float64) - 128) * (255 / 224), 2, 0), 2, 1)
    b = luma + 2 * (1 - kb) * pb
    g = luma - (2 * kb * (1 - kb) / kg) * pb - (2 * kr * (1 - kr) / kg) * pr
    r = luma + 2 * (1 - kr) * pr
    return _to_byte(np.stack([b, g, r], axis=2))


def bgr_to_yuv420_reference(bgr: np.ndarray, matrix: int = 601) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tight (Y, U, V) planes of ``bgr`` in float64; chroma from each 2 x 2 block's mean colour."""
    kr, kb = MATRICES[matrix]
    colour = bgr.astype(np.float64)
    height, width = bgr.shape[:2]
    mean = colour.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))

    def luma(c):
        return kr * c[..., 2] + (1 - kr - kb) * c[..., 1] + kb * c[..., 0]

    y = 16 + (219 / 255) * luma(colour)
    u = 128 + (224 / 255) * (mean[..., 0] - luma(mean)) / (2 * (1 - kb))
    v = 128 + (224 / 255) * (mean[..., 2] - luma(mean)) / (2 * (1 - kr))
    return _to_byte(y), _to_byte(u), _to_byte(v)
