"""The detections type: one struct of arrays for all faces in one frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MESH_POINTS = 468  # veil.engines.mesh.POINTS


def _as(array, dtype, shape, name: str, n: int | None) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=dtype)  # OpenCV takes only contiguous point arrays
    expected = tuple(n if d is None else d for d in shape)
    if array.ndim != len(shape) or any(e is not None and a != e for a, e in zip(array.shape, expected)):
        shown = "x".join("N" if d is None else str(d) for d in shape)
        raise ValueError(f"{name} must have shape {shown} (N={n}), got {array.shape}")
    return array


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of Nx4 and Mx4 (x1, y1, x2, y2) boxes, NxM."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


@dataclass(frozen=True)
class Faces:
    """Faces found in one frame, in that frame's pixel coordinates.

    boxes: Nx4 float32 (x1, y1, x2, y2); scores: N float32; landmarks: Nx5x2 float32
    (right eye, left eye, nose tip, right and left mouth corner, as YuNet orders them;
    NaN where a detector gives none); track_ids: N int64 (-1 before tracking);
    detected: N bool, True where the box comes from this frame's detector rather than
    from the tracker's prediction; mesh: Nx468x2 float32, MediaPipe's face mesh in frame
    pixels (veil.engines.mesh), NaN where none was made or it was not confident (None: all NaN).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    track_ids: np.ndarray
    detected: np.ndarray
    mesh: np.ndarray | None = None

    def __post_init__(self):
        boxes = _as(self.boxes, np.float32, (None, 4), "boxes", None)
        n = len(boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", _as(self.scores, np.float32, (None,), "scores", n))
        object.__setattr__(self, "landmarks", _as(self.landmarks, np.float32, (None, 5, 2), "landmarks", n))
        object.__setattr__(self, "track_ids", _as(self.track_ids, np.int64, (None,), "track_ids", n))
        object.__setattr__(self, "detected", _as(self.detected, bool, (None,), "detected", n))
        mesh = np.full((n, MESH_POINTS, 2), np.nan, np.float32) if self.mesh is None else self.mesh
        object.__setattr__(self, "mesh", _as(mesh, np.float32, (None, MESH_POINTS, 2), "mesh", n))

    @classmethod
    def empty(cls) -> Faces:
        return cls.from_boxes(np.zeros((0, 4), np.float32))

    @classmethod
    def from_boxes(cls, boxes, scores=None, landmarks=None, track_ids=None, detected=None) -> Faces:
        """Fill what a caller does not know: scores 1, landmarks NaN, no track, detected."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        n = len(boxes)
        return cls(
            boxes=boxes,
            scores=np.ones(n, np.float32) if scores is None else scores,
            landmarks=np.full((n, 5, 2), np.nan, np.float32) if landmarks is None else landmarks,
            track_ids=np.full(n, -1, np.int64) if track_ids is None else track_ids,
            detected=np.ones(n, bool) if detected is None else detected,
        )

    @classmethod
    def concat(cls, parts: list[Faces]) -> Faces:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> Faces:
        """Index with a boolean mask, an index array or a slice; always returns Faces."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Faces(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    def clipped(self, width: int, height: int) -> Faces:
        """Boxes clipped to the image; faces left with no area are dropped."""
        boxes = self.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return Faces(boxes, self.scores, self.landmarks, self.track_ids, self.detected, self.mesh)[keep]

    def with_mesh(self, mesh: np.ndarray) -> Faces:
        return Faces(self.boxes, self.scores, self.landmarks, self.track_ids, self.detected, mesh)
