"""The classic anonymisers: faces hidden, everything else bit-exact."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from veil.errors import InputError
from veil.stream.anonymisers.classic import CLASSIC_MODES, Anonymiser, cover_whole_frame
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
