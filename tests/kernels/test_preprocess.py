"""The preprocess kernel builds an engine's NCHW input straight from the uint8 frame: the
generator's masked RGB crops of every face in one launch, and the detector's resized frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.kernels.devices import DEVICES, back, on
from veil.engines import align
from veil.kernels.preprocess import detector_input, generator_input, preprocess, preprocess_reference

HEIGHT, WIDTH = 61, 83  # not multiples of the 16 x 16 block


def random_frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def landmarks(cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """The template's five points for a face ``size`` frame pixels wide at (cx, cy), turned by ``angle``."""
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return ((align.TEMPLATE - align.SIZE / 2) * size / align.SIZE) @ turn.T + (cx, cy)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("swap_rb", [True, False])
def test_a_batch_with_different_matrices_and_a_mask_matches_remap(device, swap_rb):
    rng = np.random.default_rng(1)
    frame = random_frame(1)
    matrices = np.array([
        [[0.9, -0.3, 20.0], [0.3, 0.9, 10.0]],
        [[1.4, 0.2, -15.0], [-0.1, 1.2, 40.0]],  # partly beyond the frame's left and bottom edges
        [[0.5, 0.0, 70.0], [0.0, 0.6, -5.0]],
    ], np.float32)  # fmt: skip
    mask = rng.uniform(0, 1, (37, 45)).astype(np.float32)
    out = back(preprocess(on(device, frame), matrices, (37, 45), 0.7, -3.0, swap_rb, mask))
    expected = preprocess_reference(frame, matrices, (37, 45), 0.7, -3.0, swap_rb, mask)
    assert out.shape == (3, 3, 37, 45)
    np.testing.assert_allclose(out, expected, atol=1e-4)  # measured 1.5e-5 (float rounding)
    assert not np.allclose(out[0], out[1], atol=1), "each face must use its own matrix"


@pytest.mark.parametrize("device", DEVICES)
def test_generator_input_matches_network_input_of_the_aligned_crops(device):
    frame = random_frame(2)
    faces = [landmarks(30, 28, 40, 0.2), landmarks(75, 8, 36, -0.5), landmarks(45, 40, 24, 0.0)]  # the second cut by the frame
    matrices = np.stack([align.similarity(points) for points in faces])
    out = back(generator_input(on(device, frame), matrices))
    expected = np.stack([align.network_input(align.crop(frame, m)[:, :, ::-1], align.transform_points(p, m))[:3] for m, p in zip(matrices, faces)])
    # align.crop rounds to uint8 and the kernel does not: measured max 0.503 and mean 0.18 grey levels.
    diff = np.abs(out - expected) * 127.5
    assert diff.max() <= 0.51, f"max diff {diff.max()} grey levels"
    assert diff.mean() < 0.22, f"mean diff {diff.mean()} grey levels"
    assert np.all(out[:, :, align.FACE_MASK > 0] == 0), "the face region must never reach the generator"


@pytest.mark.parametrize("device", DEVICES)
def test_a_frame_without_faces_gives_an_empty_batch(device):
    out = generator_input(on(device, random_frame(3)), np.zeros((0, 2, 3), np.float32))
    assert tuple(out.shape) == (0, 3, align.SIZE, align.SIZE)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(40, 32), (33, 27), (166, 122), (57, 71)])
def test_detector_input_matches_cv2_resize(device, size):
    frame = random_frame(4)
    width, height = size
    out = back(detector_input(on(device, frame), width, height))
    assert out.shape == (1, 3, height, width)
    exact = cv2.resize(frame.astype(np.float32), size, interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(out, exact, atol=5e-3)  # measured 2e-3: cv2's float weights
    # cv2 on uint8 uses 11-bit weights and rounds: measured max 0.78 and mean 0.275 grey levels.
    diff = np.abs(out - cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None])
    assert diff.max() < 1.0 and diff.mean() < 0.3


def test_wrong_shapes_are_refused_before_launch():
    frame = random_frame(5)
    with pytest.raises(ValueError, match="matrices must be a numpy N x 2 x 3 array"):
        preprocess(frame, np.zeros((2, 3), np.float32), (8, 8), 1.0, 0.0, False)
    with pytest.raises(ValueError, match="mask must be 8x8"):
        preprocess(frame, np.zeros((1, 2, 3), np.float32), (8, 8), 1.0, 0.0, False, np.zeros((8, 9), np.float32))
    with pytest.raises(ValueError, match="frame must be H x W x 3"):
        preprocess(frame[:, :, :1], np.zeros((1, 2, 3), np.float32), (8, 8), 1.0, 0.0, False)
