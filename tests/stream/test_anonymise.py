"""The classic anonymisers: faces hidden, everything else bit-exact."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from veil.errors import InputError
from veil.stream.anonymisers.classic import CLASSIC_MODES, SOLID_BGR, Anonymiser, cover_whole_frame
from veil.stream.faces import Faces
from veil.stream.frame import Frame


@pytest.fixture
def noisy_image():
    return np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", CLASSIC_MODES)
def test_pixels_outside_the_mask_are_bit_exact(mode, noisy_image):
    anonymiser = Anonymiser(mode=mode)
    box = np.array([100, 60, 160, 140], np.float32)
    out = anonymiser.apply(noisy_image, Faces.from_boxes([box]))
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    reach = 1 + anonymiser.margin + 1e-3
    grown = (x1 - w * (reach - 1) - w * anonymiser.feather, y1 - h * (reach - 1) - h * anonymiser.feather)
    ys, xs = np.nonzero((out != noisy_image).any(axis=2))
    assert xs.min() >= np.floor(grown[0]) and ys.min() >= np.floor(grown[1])
    outside = np.ones(noisy_image.shape[:2], bool)
    outside[int(ys.min()) : int(ys.max()) + 1, int(xs.min()) : int(xs.max()) + 1] = False
    assert (out[outside] == noisy_image[outside]).all()


@pytest.mark.parametrize("mode", CLASSIC_MODES)
def test_every_pixel_of_the_face_box_is_fully_replaced(mode, noisy_image):
    box = [100, 60, 160, 140]
    out = Anonymiser(mode=mode).apply(noisy_image, Faces.from_boxes([box]))
    face_in, face_out = noisy_image[60:140, 100:160].astype(int), out[60:140, 100:160].astype(int)
    # Random noise has no structure to survive: hidden means near-uniform.
    assert face_out.std() < face_in.std() / 3
    assert (np.abs(face_out - face_in).mean(axis=2) > 0).mean() > 0.95


def test_strength_scales_with_face_size():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (800, 800, 3), dtype=np.uint8)
    small = Anonymiser(mode="pixelate").apply(image, Faces.from_boxes([[10, 10, 60, 60]]))[10:60, 10:60]
    large = Anonymiser(mode="pixelate").apply(image, Faces.from_boxes([[100, 100, 600, 600]]))[100:600, 100:600]

    def distinct_rows(patch):
        return len(np.unique(patch[:, :, 0], axis=0))

    # The same number of blocks across the face whatever its size.
    assert abs(distinct_rows(small) - distinct_rows(large)) <= 3


def test_faces_partly_outside_the_frame_are_handled(noisy_image):
    out = Anonymiser().apply(noisy_image, Faces.from_boxes([[-30, -20, 40, 50], [300, 200, 400, 300]]))
    assert out.shape == noisy_image.shape and (out[0:30, 0:20] != noisy_image[0:30, 0:20]).any()


def test_unknown_mode_is_a_clear_input_error():
    with pytest.raises(InputError, match="unknown mode 'swirl'"):
        Anonymiser(mode="swirl")


def test_fallback_covers_the_whole_frame(noisy_image):
    frame = Frame(image=noisy_image, pts=0, time_base=Fraction(1, 25), index=0)
    covered = cover_whole_frame(frame).image
    assert covered.shape == noisy_image.shape
    assert len(np.unique(covered.reshape(-1, 3), axis=0)) <= 16 * 16


def blob_mesh(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """468 points filling an ellipse, as a mesh fills a face (1x468x2)."""
    rng = np.random.default_rng(2)
    angle, radius = rng.uniform(0, 2 * np.pi, 468), np.sqrt(rng.uniform(0, 1, 468))
    return np.stack([cx + rx * radius * np.cos(angle), cy + ry * radius * np.sin(angle)], axis=1)[None].astype(np.float32)


CONTOUR_BOX = [110, 70, 150, 130]


def test_a_contour_mask_covers_the_mesh_and_changes_nothing_past_its_region(noisy_image):
    mesh = blob_mesh(130, 100, 25, 35)
    faces = Faces.from_boxes([CONTOUR_BOX]).with_mesh(mesh)
    anonymiser = Anonymiser(mode="solid", shape="contour")
    out = anonymiser.apply(noisy_image, faces)
    inside = np.zeros(noisy_image.shape[:2], np.uint8)
    cv2.fillPoly(inside, [cv2.convexHull(mesh[0]).astype(np.int32)], 1)
    assert (out[inside > 0] == SOLID_BGR).all()  # every pixel of the face: the fill, exactly
    region = anonymiser.region(faces.boxes[0], *noisy_image.shape[:2], faces.mesh[0])  # what the seal stage keeps
    changed = (out != noisy_image).any(axis=2)
    ys, xs = np.nonzero(changed)
    assert region.left <= xs.min() and xs.max() < region.right and region.top <= ys.min() and ys.max() < region.bottom
    # tighter than the ellipse round the same box: the contour follows the face, not a box's margin
    ellipse = (Anonymiser(mode="solid").apply(noisy_image, faces) != noisy_image).any(axis=2)
    assert changed.sum() < ellipse.sum()


@pytest.mark.parametrize("mesh", [None, blob_mesh(60, 40, 25, 35), blob_mesh(130, 100, 80, 90)],
                         ids=["no mesh", "mesh beside the box", "mesh far larger than the box"])
def test_contour_falls_back_to_the_ellipse_where_the_mesh_is_missing_or_disagrees(noisy_image, mesh):
    faces = Faces.from_boxes([CONTOUR_BOX])
    faces = faces if mesh is None else faces.with_mesh(mesh)
    contour = Anonymiser(mode="pixelate", shape="contour").apply(noisy_image, faces)
    np.testing.assert_array_equal(contour, Anonymiser(mode="pixelate").apply(noisy_image, faces))
