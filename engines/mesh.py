"""MediaPipe's face mesh: 468 points on a face, from a box and its eyes, on any engine backend.

The model is MediaPipe 0.10.21's face_landmark, converted to ONNX (weights/mediapipe). It
takes a 192x192 RGB crop in [0, 1], upright and about 1.5 faces wide, and gives 468 (x, y, z)
points in crop pixels and a logit that a face fills the crop. The crop is the detector's box
grown 1.5 times, turned by the eye line. MediaPipe's own graphs crop a tracked face again
around the points it found, a second run: on the 43 annotated dlib faces that moved eight
points (eye and mouth corners, nose tip, chin) from 0.076 to 0.070 inter-ocular distances
from dlib's, for twice the cost, so Veil runs once (benchmarks/MEDIAPIPE.md).

Point numbers are MediaPipe's (its canonical face model); the few Veil uses are named here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import onnx

from veil.engines import MEDIAPIPE_WEIGHTS
from veil.engines.onnx_models import free_reshape_batch, make_input_dims_symbolic

SIDE = 192
CROP_SCALE = 1.5  # crop side over the face's size, as MediaPipe's graphs take it
PRESENCE = 0.5  # a mesh whose face-presence probability is lower is not used
POINTS = 468
# The face's outline, clockwise from the top of the forehead (MediaPipe's FACEMESH_FACE_OVAL).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (362, 263)  # the subject's right eye: outer, inner
MOUTH_CORNERS = (61, 291)  # right, left
NOSE_TIP = 1
CHIN = 152
# What carries an expression, in veil.engines.align.neutral_expression's order: the mouth
# corners, the inner lips (upper, lower), the right eye's lids (upper, lower), the left's.
EXPRESSION = (61, 291, 13, 14, 159, 145, 386, 374)
EXPRESSION_MIRROR = [1, 0, 2, 3, 6, 7, 4, 5]  # their order after a horizontal flip


@functools.lru_cache(maxsize=1)
def runnable_model() -> onnx.ModelProto:
    """The converted model with its batch axis free (all of a frame's faces in one run)."""
    return make_input_dims_symbolic(free_reshape_batch(onnx.load(str(MEDIAPIPE_WEIGHTS / "face_mesh.onnx"))), {0: "batch"})


@dataclass(frozen=True)
class Meshes:
    """Meshes of N faces in frame pixels. points: Nx468x3 (x, y and MediaPipe's relative depth,
    in pixels too); presence: N, the model's probability that a face filled its crop. A face
    whose presence is under PRESENCE has NaN points."""

    points: np.ndarray
    presence: np.ndarray


def crop_matrix(centre: np.ndarray, side: float, angle: float) -> np.ndarray:
    """2x3 map from frame pixels to the SIDE x SIDE crop of a square of ``side`` frame pixels
    at ``centre``, turned by ``angle`` radians so that the face in it is upright."""
    scale = SIDE / side
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    matrix = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    matrix[:, 2] = SIDE / 2 - matrix[:, :2] @ centre
    return matrix


def roi_from_box(box: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centre, side and angle of a detector box's crop: the eye line sets the turn (upright
    when the eyes are not known)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    eyes = left_eye - right_eye
    angle = float(np.arctan2(eyes[1], eyes[0])) if np.all(np.isfinite(eyes)) else 0.0
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2]), CROP_SCALE * max(x2 - x1, y2 - y1), angle


class FaceMesh:
    """Meshes for the faces of a frame, on an engine (veil.engines.runtime.open_engine of
    ``runnable_model()``)."""

    def __init__(self, engine):
        self.engine = engine
        self.input_name = engine.input_names[0]

    def meshes(self, image_bgr: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> Meshes:
        """The mesh of each face (boxes Nx4, five landmarks Nx5x2 in YuNet's order, NaN
        where unknown) in a BGR frame."""
        rois = [roi_from_box(box, points[0], points[1]) for box, points in zip(boxes, landmarks)]
        if not rois:
            return Meshes(np.zeros((0, POINTS, 3), np.float32), np.zeros(0, np.float32))
        matrices = [crop_matrix(*roi) for roi in rois]
        crops = np.stack([cv2.warpAffine(image_bgr, matrix, (SIDE, SIDE), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT) for matrix in matrices])
        blob = crops[..., ::-1].astype(np.float32) / 255
        raw, logits = sorted(self.engine.run({self.input_name: blob}), key=lambda output: -output.shape[-1])
        presence = 1 / (1 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -80, 80)))
        points = raw.reshape(-1, POINTS, 3).astype(np.float64)
        out = np.empty_like(points)
        for i, matrix in enumerate(matrices):
            inverse = cv2.invertAffineTransform(matrix)
            out[i, :, :2] = points[i, :, :2] @ inverse[:, :2].T + inverse[:, 2]
            out[i, :, 2] = points[i, :, 2] * np.hypot(*inverse[:, 0])  # depth, in frame pixels like x
        out[presence < PRESENCE] = np.nan
        return Meshes(out.astype(np.float32), presence.astype(np.float32))
