"""The composite kernel blends every face of a frame in one launch and gives what the
CPU pipeline's ``paste`` gives face by face, touching no pixel outside the faces."""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels.devices import DEVICES, back, on
from veil.engines import align
from veil.kernels.composite import composite, composite_reference, paste_rois

HEIGHT, WIDTH = 61, 83  # not multiples of the 16 x 16 block
# Over the values the blend changed, in grey levels: paste rounds the crop to uint8 and
# blends with cv2.blendLinear where the kernel keeps floats: measured max 1, mean 0.17.
# (Against paste in float maths, as of e5ba03e: max 1, mean 0.001.)
MAX_DIFF, MEAN_DIFF = 1, 0.25


def face_matrix(cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Frame pixel -> crop pixel for a crop ``size`` frame pixels wide centred on (cx, cy)."""
    k = align.SIZE / size
    matrix = np.array([[np.cos(angle) * k, -np.sin(angle) * k, 0], [np.sin(angle) * k, np.cos(angle) * k, 0]])
    matrix[:, 2] = align.SIZE / 2 - matrix[:, :2] @ [cx, cy]
    return matrix.astype(np.float32)


def scene(faces: list[tuple], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    crops = rng.uniform(0, 255, (len(faces), align.SIZE, align.SIZE, 3)).astype(np.float32)
    return frame, crops, np.stack([face_matrix(*face) for face in faces])


def run(device: str, frame: np.ndarray, crops: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    on_device, crops_on_device = on(device, frame.copy(), crops)  # composite works in place
    composite(on_device, crops_on_device, matrices, align.BLEND_ALPHA)
    return back(on_device)


def assert_close_to_paste(out: np.ndarray, expected: np.ndarray, frame: np.ndarray) -> None:
    diff = np.abs(out.astype(int) - expected)
    assert diff.max() <= MAX_DIFF, f"max diff {diff.max()}"
    blended = diff[(expected != frame) | (out != frame)]
    assert blended.mean() < MEAN_DIFF, f"mean diff {blended.mean()}"


@pytest.mark.parametrize("device", DEVICES)
def test_a_batch_of_faces_with_different_matrices_matches_paste_face_by_face(device):
    faces = [(8, 6, 40, 0.3), (78, 58, 44, -0.4), (40, 30, 34, 0.1), (24, 50, 26, -0.2)]  # two cut by the frame's edges
    frame, crops, matrices = scene(faces)
    expected = composite_reference(frame, crops, matrices)
    out = run(device, frame, crops, matrices)
    assert_close_to_paste(out, expected, frame)
    assert (expected != frame).any(axis=2).mean() > 0.2, "the faces must cover a good part of the frame"


@pytest.mark.parametrize("device", DEVICES)
def test_overlapping_faces_blend_in_order_like_sequential_pastes(device):
    frame, crops, matrices = scene([(38, 30, 40, 0.2), (46, 34, 36, -0.3)], seed=1)
    out = run(device, frame, crops, matrices)
    swapped = run(device, frame, crops[::-1].copy(), matrices[::-1].copy())
    assert_close_to_paste(out, composite_reference(frame, crops, matrices), frame)
    assert_close_to_paste(swapped, composite_reference(frame, crops[::-1], matrices[::-1]), frame)
    assert (np.abs(out.astype(int) - swapped) > 10).any(axis=2).mean() > 0.03, "where they overlap, the later face must be on top"


@pytest.mark.parametrize("device", DEVICES)
def test_pixels_outside_every_face_region_stay_bit_identical(device):
    frame, crops, matrices = scene([(15, 15, 24, 0.5), (60, 40, 20, -0.1)], seed=2)
    out = run(device, frame, crops, matrices)
    outside = np.ones((HEIGHT, WIDTH), bool)
    for left, top, right, bottom in paste_rois(matrices, HEIGHT, WIDTH):
        outside[top:bottom, left:right] = False
    assert 0.5 < outside.mean() < 0.97
    np.testing.assert_array_equal(out[outside], frame[outside])
    assert (out[~outside] != frame[~outside]).any()


@pytest.mark.parametrize("device", DEVICES)
def test_a_face_wholly_outside_the_frame_changes_nothing(device):
    frame, crops, matrices = scene([(-60, 20, 30, 0.0), (30, 200, 40, 0.3)], seed=3)
    np.testing.assert_array_equal(run(device, frame, crops, matrices), frame)
    frame, crops, matrices = scene([(-60, 20, 30, 0.0), (30, 30, 40, 0.3)], seed=3)
    assert_close_to_paste(run(device, frame, crops, matrices), composite_reference(frame, crops, matrices), frame)


def test_wrong_shapes_are_refused_before_launch():
    frame, crops, matrices = scene([(30, 30, 40, 0.0)])
    with pytest.raises(ValueError, match="alpha must be 128x128"):
        composite(frame, crops, matrices, align.BLEND_ALPHA[:64, :64])
    with pytest.raises(ValueError, match="matrices must be a numpy 1x2x3 array"):
        composite(frame, crops, matrices[:, :1], align.BLEND_ALPHA)
    with pytest.raises(ValueError, match="crops must be N x S x S x 3"):
        composite(frame, crops[:, :, :64], matrices, align.BLEND_ALPHA)
