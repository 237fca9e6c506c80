"""MediaPipe's face models as Veil ships them: converted to ONNX, they give what MediaPipe's
own TFLite runtime gives, batched or not; the mesh lands on the face and says when there is none."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import skimage.data

from veil.engines import mesh
from veil.engines.runtime import open_engine
from veil.stream.detectors import make_detector
from veil.stream.detectors.blazeface import runnable_model

# What ai-edge-litert 2.3.0 gave for MediaPipe 0.10.21's .tflite files on the astronaut (the
# top 8 anchors of each detector, the mesh of one crop): made by hand, once, where TFLite ran.
REFERENCE = np.load(Path(__file__).with_name("data") / "mediapipe_tflite_astronaut.npz")


@pytest.fixture(scope="module")
def astronaut_rgb() -> np.ndarray:
    return skimage.data.astronaut()


def session(model) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("name", "side"), [("full_range", 192), ("short_range", 128)])
def test_the_converted_detectors_give_what_tflite_gave(astronaut_rgb, name, side):
    blob = cv2.resize(astronaut_rgb, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)[None] / 127.5 - 1
    run = session(runnable_model(name))
    regressors, logits = sorted(run.run(None, {run.get_inputs()[0].name: blob}), key=lambda out: -out.shape[-1])
    top = REFERENCE[f"{name}_anchors"]
    np.testing.assert_allclose(logits[0, top, 0], REFERENCE[f"{name}_scores"], atol=1e-3)
    np.testing.assert_allclose(regressors[0, top], REFERENCE[f"{name}_regressors"], atol=1e-2)
    # a batch of three gives each image what it gives alone
    batch = np.concatenate([blob, -blob, blob[:, ::-1]])
    together = run.run(None, {run.get_inputs()[0].name: batch})
    for i in range(3):
        alone = run.run(None, {run.get_inputs()[0].name: batch[i:i + 1]})
        for a, b in zip(together, alone):
            np.testing.assert_allclose(a[i], b[0], atol=1e-4)


def test_the_converted_mesh_gives_what_tflite_gave(astronaut_rgb):
    crop = cv2.resize(astronaut_rgb[40:200, 150:310], (192, 192), interpolation=cv2.INTER_AREA).astype(np.float32)[None] / 255
    run = session(mesh.runnable_model())
    points, logit = sorted(run.run(None, {run.get_inputs()[0].name: crop}), key=lambda out: -out.shape[-1])
    np.testing.assert_allclose(points.reshape(-1), REFERENCE["mesh_points"], atol=1e-2)
    np.testing.assert_allclose(logit.reshape(-1), REFERENCE["mesh_logit"], atol=1e-3)


@pytest.fixture(scope="module")
def face_mesh() -> mesh.FaceMesh:
    return mesh.FaceMesh(open_engine(mesh.runnable_model(), "onnxruntime", "cpu"))


def test_the_mesh_lands_on_the_face_the_detector_found(astronaut_rgb, face_mesh):
    image = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR)
    faces = make_detector("yunet").detect(image)
    found = face_mesh.meshes(image, faces.boxes, faces.landmarks)
    assert found.points.shape == (1, mesh.POINTS, 3) and found.presence[0] > 0.9
    points = found.points[0, :, :2]
    eye_distance = np.linalg.norm(faces.landmarks[0, 0] - faces.landmarks[0, 1])
    eyes = np.stack([points[list(mesh.RIGHT_EYE_CORNERS)].mean(axis=0), points[list(mesh.LEFT_EYE_CORNERS)].mean(axis=0)])
    mouth = points[list(mesh.MOUTH_CORNERS)]
    # YuNet and the mesh are independent models: their eyes and mouth corners agree to a fifth of the eye distance
    assert np.linalg.norm(eyes - faces.landmarks[0, :2], axis=1).max() < 0.2 * eye_distance
    assert np.linalg.norm(mouth - faces.landmarks[0, 3:], axis=1).max() < 0.2 * eye_distance
    assert points[mesh.CHIN, 1] > mouth[:, 1].max() and points[10, 1] < eyes[:, 1].min()  # chin below, forehead above


def test_a_turned_frame_gives_the_same_mesh_turned(astronaut_rgb, face_mesh):
    image = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR)
    turn = cv2.getRotationMatrix2D((256, 256), 30, 1.0)
    turned = cv2.warpAffine(image, turn, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    upright = make_detector("yunet").detect(image)
    faces = make_detector("yunet").detect(turned)
    expected = cv2.transform(face_mesh.meshes(image, upright.boxes, upright.landmarks).points[:, :, None, :2].reshape(-1, 1, 2), turn)
    got = face_mesh.meshes(turned, faces.boxes, faces.landmarks).points[0, :, :2]
    eye_distance = np.linalg.norm(faces.landmarks[0, 0] - faces.landmarks[0, 1])
    assert np.median(np.linalg.norm(got - expected.reshape(-1, 2), axis=1)) < 0.1 * eye_distance


def test_no_face_gives_no_mesh(face_mesh):
    wall = np.full((360, 640, 3), 128, np.uint8)
    found = face_mesh.meshes(wall, np.array([[200, 100, 300, 220]], np.float32), np.full((1, 5, 2), np.nan, np.float32))
    assert found.presence[0] < mesh.PRESENCE and np.isnan(found.points).all()
    empty = face_mesh.meshes(wall, np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32))
    assert empty.points.shape == (0, mesh.POINTS, 3)
