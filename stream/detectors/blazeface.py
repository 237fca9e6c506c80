"""BlazeFace, MediaPipe's face detector (full and short range), on any engine backend.

The models are MediaPipe 0.10.21's own, converted to ONNX (engines/weights/mediapipe). Pre-
and post-processing follow MediaPipe's face detection graphs: the picture letterboxed into
the model's square input, RGB in [-1, 1], SSD anchors of fixed size 1, sigmoid scores, box
and keypoint offsets in input pixels from each anchor's centre.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import onnx

from veil.engines import MEDIAPIPE_WEIGHTS
from veil.engines.onnx_models import free_reshape_batch, make_input_dims_symbolic
from veil.stream.detectors.passes import ScaledDetector, nms
from veil.stream.faces import Faces

# BlazeFace gives the mouth's centre (its keypoint 3), not its corners: they are put on the
# eye line's direction either side of it, 0.414 eye distances away, as in ArcFace's template.
MOUTH_HALF_WIDTH = 0.414


@functools.lru_cache(maxsize=2)
def runnable_model(name: str) -> onnx.ModelProto:
    """The converted model with its batch axis free (TensorRT and the cameras' batches)."""
    model = onnx.load(str(MEDIAPIPE_WEIGHTS / f"blazeface_{name}.onnx"))
    return make_input_dims_symbolic(free_reshape_batch(model), {0: "batch"})


def anchor_centres(side: int, layers: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Nx2 anchor centres in [0, 1], in the models' output order; ``layers``: (stride, anchors a cell)."""
    centres = []
    for stride, per_cell in layers:
        cells = side // stride
        row, col = np.mgrid[0:cells, 0:cells]
        grid = np.column_stack([(col.ravel() + 0.5) / cells, (row.ravel() + 0.5) / cells])
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def letterboxed(image_bgr: np.ndarray, side: int) -> tuple[np.ndarray, float, int, int]:
    """1xSxSx3 float32 RGB in [-1, 1] with the image scaled into the middle, its scale and
    the padding left and top."""
    height, width = image_bgr.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    left, top = (side - size[0]) // 2, (side - size[1]) // 2
    blob = np.full((1, side, side, 3), -1.0, np.float32)
    blob[0, top:top + size[1], left:left + size[0]] = resized[:, :, ::-1] / np.float32(127.5) - 1
    return blob, scale, left, top


def five_points(keypoints: np.ndarray) -> np.ndarray:
    """Nx6x2 BlazeFace keypoints (right eye, left eye, nose tip, mouth centre, right and left
    ear) as Nx5x2 in YuNet's order (right eye, left eye, nose tip, right and left mouth corner)."""
    right_eye, left_eye, nose, mouth = (keypoints[:, i] for i in range(4))
    half = MOUTH_HALF_WIDTH * (right_eye - left_eye)
    return np.stack([right_eye, left_eye, nose, mouth + half, mouth - half], axis=1)


class BlazeFace(ScaledDetector):
    """MediaPipe's fast detector: the whole picture at 192x192 (full range: faces up to about
    5 m from a camera) or 128x128 (short range: faces within 2 m, as on a webcam).

    Every pass is letterboxed into the model's own square, so there is no input size to
    choose: the frame is seen whole (INPUT_SIZE None), and tiles look closer."""

    INPUT_SIZE = None
    SCORE_THRESHOLD = 0.5
    RANGE = "full_range"
    SIDE = 192
    LAYERS = ((4, 1),)

    @classmethod
    def model(cls) -> onnx.ModelProto:
        return runnable_model(cls.RANGE)

    @classmethod
    def input_shapes(cls, input_size, tiles, edge_pad, batch):
        fixed = (1, cls.SIDE, cls.SIDE, 3)
        return fixed, fixed, (batch, cls.SIDE, cls.SIDE, 3)

    def detect_native(self, image: np.ndarray) -> Faces:
        blob, scale, left, top = letterboxed(image, self.SIDE)
        outputs = self.engine.run({self.input_name: blob})
        regressors, logits = sorted(outputs, key=lambda output: -output.shape[-1])  # Nx16 offsets, Nx1 scores
        scores = (1 / (1 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100, 100)))).astype(np.float32)
        keep = np.flatnonzero(scores > self.score_threshold)
        anchors = anchor_centres(self.SIDE, self.LAYERS)[keep]
        raw = regressors[0, keep]
        centre = raw[:, :2] / self.SIDE + anchors
        half = raw[:, 2:4] / self.SIDE / 2
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) / self.SIDE + anchors[:, None]
        offset = np.array([left, top], np.float32)
        boxes = (np.concatenate([centre - half, centre + half], axis=1) * self.SIDE - np.tile(offset, 2)) / scale
        points = (five_points(keypoints) * self.SIDE - offset) / scale
        chosen = nms(boxes, scores[keep], self.nms_threshold)
        return Faces.from_boxes(boxes[chosen], scores=scores[keep][chosen], landmarks=points[chosen])


class BlazeFaceShort(BlazeFace):
    RANGE = "short_range"
    SIDE = 128
    LAYERS = ((8, 2), (16, 6))
