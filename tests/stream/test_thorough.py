"""The thorough detector (--thorough): more faces than the default, never fewer, and the
mirrored passes mapped back to the frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from veil.stream.detectors import make_detector
from veil.stream.detectors.thorough import mirrored
from veil.stream.faces import iou_matrix
from veil.testing.annotated import annotated_photos

DLIB_FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "annotated" / "dlib_faces"
ASTRONAUT_FACE = np.array([180.0, 60.0, 270.0, 178.0])  # drawn by hand, as in test_detectors


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def thorough():
    return make_detector("thorough")


def test_faces_found_in_the_mirror_image_land_on_the_face_with_right_and_left_in_place(astronaut):
    yunet = make_detector("yunet")
    width = astronaut.shape[1]
    found = mirrored(yunet.detect(np.ascontiguousarray(astronaut[:, ::-1])), width)
    direct = yunet.detect(astronaut)
    assert len(found) == len(direct) == 1
    assert iou_matrix(direct.boxes, found.boxes)[0, 0] > 0.9, (direct.boxes, found.boxes)
    np.testing.assert_allclose(found.landmarks, direct.landmarks, atol=8)  # swapped eyes would be 40 px off


def test_a_face_too_small_for_the_default_is_found_by_the_thorough_detector(astronaut, thorough):
    scale = 20 / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])  # a face 20 px high in a 1080p frame
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    frame[500:500 + small.shape[0], 1100:1100 + small.shape[1]] = small
    truth = ASTRONAUT_FACE * scale + [1100, 500, 1100, 500]
    default = make_detector("yunet").detect(frame)
    assert not len(default) or iou_matrix(truth[None], default.boxes).max() < 0.4, "the default found it: the test shows nothing"
    found = thorough.detect(frame)
    assert len(found) and iou_matrix(truth[None], found.boxes).max() >= 0.5, found.boxes


def test_every_annotated_face_the_default_finds_the_thorough_detector_finds_too(thorough):
    if not DLIB_FACES.is_dir():
        pytest.skip(f"real annotated photos not present at {DLIB_FACES} (../shared/data)")
    default = make_detector("yunet")
    for image, truth, _ in annotated_photos(DLIB_FACES, "testing.xml"):
        hits = [iou_matrix(truth, faces.boxes).max(axis=1) >= 0.4 if len(faces) else np.zeros(len(truth), bool)
                for faces in (default.detect(image), thorough.detect(image))]
        assert not (hits[0] & ~hits[1]).any(), f"thorough lost {int((hits[0] & ~hits[1]).sum())} face(s) the default found"
