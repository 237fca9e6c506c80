"""SFace embeddings of detected faces, on the run's engine backend, in one batch per frame,
and the checks that say when a face cannot be judged (then nobody may be shown by it)."""

from __future__ import annotations

import cv2
import numpy as np

from veil.engines import align
from veil.engines.runtime import open_engine
from veil.engines.sface import runnable_model
from veil.stream.faces import Faces

MIN_EYES_PX = 16.0  # eye distance below which a face holds too few pixels to recognise
MAX_TURN = 0.3  # nose off the eyes' midline, in eye distances, in the aligned crop: a profile beyond it
MIN_SHARPNESS = 15.0  # variance of the aligned crop's Laplacian below which it is too blurred


class Recogniser:
    """``embed`` gives unit 128-d embeddings; ``judgeable`` why a face cannot be judged."""

    def __init__(self, backend: str = "onnxruntime", device: str = "cpu"):
        self.engine = open_engine(runnable_model(), backend, device, intra_op_threads=1)

    @staticmethod
    def crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
        """The 112x112 ArcFace-aligned crop SFace takes, or None without usable landmarks."""
        matrix = align.similarity(landmarks, align.ARCFACE_112)
        if matrix is None:
            return None
        return cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, 128), np.float32)
        blob = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)
        found = np.asarray(self.engine.run({"data": blob})[0], np.float32).reshape(len(crops), -1)
        return found / np.linalg.norm(found, axis=1, keepdims=True).clip(1e-12)

    @staticmethod
    def judgeable(faces: Faces, index: int, crop: np.ndarray | None) -> str | None:
        """None if face ``index`` can be judged on this frame, else why not."""
        if not faces.detected[index]:
            return "not detected on this frame"
        if crop is None:
            return "no landmarks"
        right_eye, left_eye, nose = faces.landmarks[index][:3]
        eyes = float(np.linalg.norm(left_eye - right_eye))
        if eyes < MIN_EYES_PX:
            return "too small"
        matrix = align.similarity(faces.landmarks[index], align.ARCFACE_112)
        aligned = cv2.transform(faces.landmarks[index][None].astype(np.float64), matrix)[0]
        midline = (aligned[0, 0] + aligned[1, 0]) / 2
        if abs(aligned[2, 0] - midline) > MAX_TURN * abs(aligned[1, 0] - aligned[0, 0]):
            return "turned away"
        if cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var() < MIN_SHARPNESS:
            return "blurred"
        if _overlaps(faces, index):
            return "overlapping another face"
        return None


def _overlaps(faces: Faces, index: int) -> bool:
    """Whether another face's box meets this one's: the track may be about to take it over."""
    me, others = faces.boxes[index], np.delete(faces.boxes, index, axis=0)
    return bool(((others[:, 0] < me[2]) & (others[:, 2] > me[0]) & (others[:, 1] < me[3]) & (others[:, 3] > me[1])).any())
