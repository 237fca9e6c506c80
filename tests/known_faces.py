"""The cheap every-frame check: every face whose box is known (the clip maker's truth)
must have been changed past recognition on every frame that is written.

A face that reached the output raw, however it was re-encoded, keeps its fine detail and
its pixels. Measured on the example clip (222 faces at least half in frame): a raw copy
through H.264 at Veil's settings kept a detail correlation of 0.97 to 1.00 and a mean
difference of 2.5 to 4.8 grey levels; blur, pixelate, solid and synth all gave a
correlation of at most 0.73 and a difference of at least 14. The check calls a face raw
when both hold: correlation at least RAW_DETAIL and difference at most RAW_DIFFERENCE.
It is cheap enough for every frame; the independent gate (veil.testing.privacy) judges the same
frames with detectors that know nothing of the truth.
"""

from __future__ import annotations

import cv2
import numpy as np

from veil.testing import timecode
from veil.testing.clips import make_example_clip
from veil.testing.privacy import leaked_faces

RAW_DETAIL = 0.9
RAW_DIFFERENCE = 8.0
MIN_FACE_PX = 12  # smaller boxes hold too few pixels to judge


def _detail(patch: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), 1.0), cv2.CV_32F).ravel()


def detail_correlation(before: np.ndarray, after: np.ndarray) -> float:
    a, b = _detail(before), _detail(after)
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return 0.0 if norm == 0 else float((a * b).sum() / norm)


def interior(box, width: int, height: int):
    """The middle of a face box mostly in frame (eyes, nose, mouth), or None."""
    x1, y1, x2, y2 = np.clip(np.asarray(box, np.float32), 0, [width, height, width, height]).astype(int)
    area = (box[2] - box[0]) * (box[3] - box[1])
    if (x2 - x1) * (y2 - y1) < 0.5 * area or min(x2 - x1, y2 - y1) < MIN_FACE_PX:
        return None  # less than half in frame: see the README's limits
    dx, dy = (x2 - x1) // 5, (y2 - y1) // 5
    return np.s_[y1 + dy : y2 - dy, x1 + dx : x2 - dx]


def left_raw(before: np.ndarray, after: np.ndarray) -> bool:
    difference = float(np.abs(before.astype(np.float32) - after.astype(np.float32)).mean())
    return difference <= RAW_DIFFERENCE and detail_correlation(before, after) >= RAW_DETAIL


def raw_faces(before: np.ndarray, after: np.ndarray, boxes) -> list[tuple[int, ...]]:
    """The known faces of one frame that ``after`` shows as they were in ``before``."""
    height, width = before.shape[:2]
    raw = []
    for box in boxes:
        inner = interior(box, width, height)
        if inner is not None and left_raw(before[inner], after[inner]):
            raw.append(tuple(int(v) for v in box))
    return raw


def judged_faces(boxes, width: int, height: int) -> int:
    return sum(interior(box, width, height) is not None for box in boxes)


def numbered_clip(path, seconds: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The example clip with each frame's number in its timecode corner: (pictures as sent, face boxes)."""
    pictures = []

    def mark(image, index):
        timecode.stamp(image, index)
        pictures.append(image.copy())

    truth = make_example_clip(path, width=640, height=360, seconds=seconds, mark=mark)
    return pictures, truth


def judge_every_frame(images, pictures, truth, gate) -> tuple[int, list, list]:
    """Each received frame against the frame it was made from: (frames judged, known faces
    left raw, frames where the gate finds a face of the input again)."""
    judged, raw, found_again = 0, [], []
    for image in images:
        number = timecode.read(image)
        assert number is not None and number < len(pictures), "every frame out carries the number of the frame it came from"
        judged += 1
        raw += [(number, box) for box in raw_faces(pictures[number], image, truth[number])]
        if len(leaked_faces(gate.detect(pictures[number]), image, gate)):
            found_again.append(number)
    return judged, raw, found_again
