"""The colour kernels: NV12 / I420 <-> BGR on pitched planes match the float equations,
agree with OpenCV's BT.601 conversions where OpenCV follows the same conventions, and a
smooth image survives the round trip through a hardware codec's NV12."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.kernels.devices import DEVICES, back, on
from veil.kernels.colour import bgr_to_i420, bgr_to_nv12, bgr_to_yuv420_reference, i420_to_bgr, nv12_to_bgr, yuv420_to_bgr_reference

# 2 x 2 blocks 25 x 19: not a multiple of the 16 x 16 thread block either way.
HEIGHT, WIDTH = 38, 50


def pitched(rng, rows: int, row_bytes: int, pad_rows: int, pad_bytes: int) -> np.ndarray:
    """A random plane with padding past the visible rows and bytes, as hardware surfaces have."""
    return rng.integers(0, 256, (rows + pad_rows, row_bytes + pad_bytes), dtype=np.uint8)


def split_cv2_i420(buffer: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's I420 buffer ((H * 3 / 2) x W) as tight Y, U and V planes."""
    chroma = buffer[height:].reshape(-1)
    quarter = height * width // 4
    return buffer[:height], chroma[:quarter].reshape(height // 2, width // 2), chroma[quarter:].reshape(height // 2, width // 2)


def smooth_bgr(height: int, width: int) -> np.ndarray:
    """Slow colour waves: at most 3 levels between neighbouring pixels."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [128 + 90 * np.sin(xs / 40 + ys / 50), 128 + 80 * np.cos(xs / 45 - ys / 35), 128 + 90 * np.sin((xs + ys) / 60)]
    return np.rint(np.stack(planes, axis=2)).astype(np.uint8)


@pytest.mark.parametrize("matrix", [601, 709])
@pytest.mark.parametrize("device", DEVICES)
def test_nv12_to_bgr_matches_the_float_equations_on_pitched_planes(device, matrix):
    rng = np.random.default_rng(1)
    y, uv = pitched(rng, HEIGHT, WIDTH, 3, 14), pitched(rng, HEIGHT // 2, WIDTH, 1, 6)
    bgr = back(nv12_to_bgr(*on(device, y, uv), width=WIDTH, height=HEIGHT, matrix=matrix))
    expected = yuv420_to_bgr_reference(y[:HEIGHT, :WIDTH], uv[: HEIGHT // 2, 0:WIDTH:2], uv[: HEIGHT // 2, 1:WIDTH:2], matrix)
    assert bgr.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(bgr.astype(int) - expected).max() <= 1  # measured: 0 on the CPU


@pytest.mark.parametrize("matrix", [601, 709])
@pytest.mark.parametrize("device", DEVICES)
def test_i420_to_bgr_matches_the_float_equations_on_pitched_planes(device, matrix):
    rng = np.random.default_rng(2)
    y = pitched(rng, HEIGHT, WIDTH, 0, 6)
    u, v = pitched(rng, HEIGHT // 2, WIDTH // 2, 2, 7), pitched(rng, HEIGHT // 2, WIDTH // 2, 0, 3)
    bgr = back(i420_to_bgr(*on(device, y, u, v), width=WIDTH, height=HEIGHT, matrix=matrix))
    expected = yuv420_to_bgr_reference(y[:, :WIDTH], u[: HEIGHT // 2, : WIDTH // 2], v[:, : WIDTH // 2], matrix)
    assert np.abs(bgr.astype(int) - expected).max() <= 1  # measured: 0 on the CPU


@pytest.mark.parametrize("matrix", [601, 709])
@pytest.mark.parametrize("device", DEVICES)
def test_bgr_to_nv12_and_i420_match_the_float_equations_and_leave_plane_padding_alone(device, matrix):
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    expected = bgr_to_yuv420_reference(bgr, matrix)
    sentinel = 7
    nv12 = tuple(np.full(shape, sentinel, np.uint8) for shape in [(HEIGHT + 2, WIDTH + 10), (HEIGHT // 2 + 1, WIDTH + 4)])
    y, uv = (back(p) for p in bgr_to_nv12(on(device, bgr), matrix=matrix, out=on(device, *nv12)))
    i420 = tuple(np.full(shape, sentinel, np.uint8) for shape in [(HEIGHT, WIDTH + 2), (HEIGHT // 2, WIDTH // 2 + 5), (HEIGHT // 2 + 3, WIDTH // 2)])
    planes = [back(p) for p in bgr_to_i420(on(device, bgr), matrix=matrix, out=on(device, *i420))]

    got_nv12 = (y[:HEIGHT, :WIDTH], uv[: HEIGHT // 2, 0:WIDTH:2], uv[: HEIGHT // 2, 1:WIDTH:2])
    got_i420 = (planes[0][:, :WIDTH], planes[1][:, : WIDTH // 2], planes[2][: HEIGHT // 2])
    for got in (got_nv12, got_i420):
        for plane, reference in zip(got, expected, strict=True):
            assert np.abs(plane.astype(int) - reference).max() <= 1  # measured: 0 on the CPU
    for plane, visible in [(y, (HEIGHT, WIDTH)), (uv, (HEIGHT // 2, WIDTH)), *zip(planes, [(HEIGHT, WIDTH), *[(HEIGHT // 2, WIDTH // 2)] * 2])]:
        padding = np.ones(plane.shape, bool)
        padding[: visible[0], : visible[1]] = False
        assert (plane[padding] == sentinel).all(), "bytes past the visible frame belong to the surface"


@pytest.mark.parametrize("device", DEVICES)
def test_nv12_and_i420_decode_agree_with_opencv_bt601_in_the_legal_range(device):
    rng = np.random.default_rng(4)
    luma = rng.integers(16, 236, (HEIGHT, WIDTH), dtype=np.uint8)
    chroma = rng.integers(16, 241, (HEIGHT // 2, WIDTH), dtype=np.uint8)
    buffer = np.concatenate([luma, chroma])  # OpenCV's NV12 and I420 layouts are both this size
    ours = back(nv12_to_bgr(*on(device, luma, chroma)))
    # OpenCV's fixed-point coefficients: measured max 1 level, on about 3.5% of values.
    assert np.abs(ours.astype(int) - cv2.cvtColor(buffer, cv2.COLOR_YUV2BGR_NV12)).max() <= 1
    ours = back(i420_to_bgr(*on(device, *split_cv2_i420(buffer, HEIGHT, WIDTH))))
    assert np.abs(ours.astype(int) - cv2.cvtColor(buffer, cv2.COLOR_YUV2BGR_I420)).max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_decode_keeps_footroom_luma_that_opencv_clamps_to_black(device):
    rng = np.random.default_rng(5)
    nv12 = rng.integers(0, 256, (HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
    ours = back(nv12_to_bgr(*on(device, nv12[:HEIGHT], nv12[HEIGHT:]))).astype(int)
    opencv = cv2.cvtColor(nv12, cv2.COLOR_YUV2BGR_NV12).astype(int)
    # OpenCV computes max(Y - 16, 0): below 16 the two differ (measured up to 19 levels);
    # with luma raised to 16 they agree again.
    assert np.abs(ours - opencv).max() > 1
    raised = back(nv12_to_bgr(*on(device, np.maximum(nv12[:HEIGHT], 16), nv12[HEIGHT:])))
    assert np.abs(raised.astype(int) - opencv).max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_bgr_to_i420_luma_agrees_with_opencv_whose_chroma_is_the_top_left_pixel(device):
    rng = np.random.default_rng(6)
    bgr = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    y, u, v = (back(p).astype(int) for p in bgr_to_i420(on(device, bgr)))
    cv_y, cv_u, cv_v = (p.astype(int) for p in split_cv2_i420(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), HEIGHT, WIDTH))
    assert np.abs(y - cv_y).max() <= 1  # measured: 1, OpenCV's fixed point
    # OpenCV subsamples chroma by taking each block's top-left pixel, not the block's mean:
    # on noise that is far from ours, and equal (within 1) when every block is one colour.
    assert np.abs(u - cv_u).max() > 16 and np.abs(v - cv_v).max() > 16
    flat = np.ascontiguousarray(np.repeat(np.repeat(bgr[0::2, 0::2], 2, axis=0), 2, axis=1))
    _, flat_u, flat_v = (back(p).astype(int) for p in bgr_to_i420(on(device, flat)))
    assert np.abs(flat_u - cv_u).max() <= 1 and np.abs(flat_v - cv_v).max() <= 1


@pytest.mark.parametrize("matrix", [601, 709])
@pytest.mark.parametrize("device", DEVICES)
def test_a_smooth_image_survives_the_round_trip_through_nv12(device, matrix):
    bgr = smooth_bgr(64, 96)
    y, uv = bgr_to_nv12(on(device, bgr), matrix=matrix)
    error = np.abs(back(nv12_to_bgr(y, uv, matrix=matrix)).astype(int) - bgr)
    # Limited-range quantisation plus 2 x 2 chroma: measured max 4, mean 0.69 (601) / 0.72 (709).
    assert error.max() <= 4 and error.mean() < 1.0


def test_odd_sizes_short_planes_and_unknown_matrices_are_refused():
    bgr = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    with pytest.raises(ValueError, match="even width and height, got 49x38"):
        bgr_to_nv12(bgr[:, :49].copy())
    with pytest.raises(ValueError, match="even width and height, got 50x37"):
        nv12_to_bgr(np.zeros((37, WIDTH), np.uint8), np.zeros((19, WIDTH), np.uint8))
    with pytest.raises(ValueError, match="UV plane must be 2-D, at least 19 rows x 50 bytes"):
        nv12_to_bgr(np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros((19, 48), np.uint8))
    with pytest.raises(ValueError, match="Y plane must be 2-D, at least 38 rows x 50 bytes"):
        bgr_to_i420(bgr, out=(np.zeros((HEIGHT, 40), np.uint8), np.zeros((19, 25), np.uint8), np.zeros((19, 25), np.uint8)))
    with pytest.raises(ValueError, match="matrix must be 601"):
        bgr_to_i420(bgr, matrix=2020)


def test_bgr_to_i420_writes_into_views_of_one_torch_buffer_in_opencvs_layout():
    torch = pytest.importorskip("torch")
    bgr = np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    buffer = torch.full((HEIGHT * WIDTH * 3 // 2,), 7, dtype=torch.uint8)
    luma, chroma = HEIGHT * WIDTH, HEIGHT * WIDTH // 4
    views = (
        buffer[:luma].view(HEIGHT, WIDTH),
        buffer[luma : luma + chroma].view(HEIGHT // 2, WIDTH // 2),
        buffer[luma + chroma :].view(HEIGHT // 2, WIDTH // 2),
    )
    bgr_to_i420(torch.from_numpy(bgr), 601, views)
    planes = split_cv2_i420(buffer.numpy().reshape(HEIGHT * 3 // 2, WIDTH), HEIGHT, WIDTH)
    for plane, expected in zip(planes, bgr_to_yuv420_reference(bgr), strict=True):
        assert np.abs(plane.astype(int) - expected).max() <= 1
