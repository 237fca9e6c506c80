"""The canonical face crop the generator works in, and the maps between it and a frame.

A face is aligned by the similarity transform that takes its five landmarks (YuNet's
order: right eye, left eye, nose tip, right and left mouth corner) closest to
``TEMPLATE``. The template is the ArcFace 112x112 one with some context around it, so
the recogniser's crop (SFace) is the centre of ours. ``FACE_MASK`` is the region the
generator replaces: eyebrows to chin, cheek to cheek. The generator never sees a pixel
inside it.
"""

from __future__ import annotations

import cv2
import numpy as np

SIZE = 128
# The generator's interface, here so that running it needs no torch: its input is
# ``network_input`` (masked RGB, mask, 5 heatmaps) and a latent code. A generator trained
# with the face mesh (``veil train --condition mesh``) also takes EXPRESSION_POINTS heatmaps.
IN_CHANNELS = 9
EXPRESSION_POINTS = 8  # veil.engines.mesh.EXPRESSION: mouth corners, inner lips, eyelids
MESH_IN_CHANNELS = IN_CHANNELS + EXPRESSION_POINTS
LATENT = 64
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)
CONTEXT = 1.3  # our crop spans this many ArcFace crops
SCALE = SIZE / (112 * CONTEXT)  # ArcFace pixels to ours
TEMPLATE = ((ARCFACE_112 - 56) * SCALE + SIZE / 2).astype(np.float32)
RECOGNISER_BOX = (SIZE / 2 - 56 * SCALE, SIZE / 2 + 56 * SCALE)  # the ArcFace crop inside ours
HEATMAP_SIGMA = 2.5
BLEND_RING = 6.0  # pixels outside the mask over which generated and original are feathered
CENTRES_Y, CENTRES_X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5  # pixel centres of the crop


def _ellipse(center, axes, grow: float = 0.0) -> np.ndarray:
    """Signed distance-like radius map: <=1 inside the ellipse grown by ``grow`` pixels."""
    return np.sqrt(((CENTRES_X - center[0]) / (axes[0] + grow)) ** 2 + ((CENTRES_Y - center[1]) / (axes[1] + grow)) ** 2)


# Eyebrows (y 22 in ArcFace pixels) to below the chin (118), cheek to cheek (16 to 96).
_CENTER = (SIZE / 2, SIZE / 2 + 14 * SCALE)
_AXES = (40 * SCALE, 48 * SCALE)
FACE_MASK = (_ellipse(_CENTER, _AXES) <= 1).astype(np.float32)
# 1 on the mask, falling to 0 across BLEND_RING pixels outside it.
BLEND_ALPHA = np.clip(
    (BLEND_RING - (_ellipse(_CENTER, _AXES) - 1) * min(_AXES)) / BLEND_RING, 0, 1
).astype(np.float32)
BLEND_ALPHA[FACE_MASK > 0] = 1.0


def similarity(landmarks: np.ndarray, target: np.ndarray = TEMPLATE) -> np.ndarray | None:
    """The 2x3 least-squares similarity taking ``landmarks`` (5x2) onto ``target``.

    None when the landmarks are missing or collapse to a point (no usable face geometry).
    """
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    if not np.all(np.isfinite(src)):
        return None
    dst = np.asarray(target, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    var = (src_c**2).sum()
    if var < 1e-6:
        return None
    # Umeyama without reflection: rotation from the cross-covariance.
    a = (src_c * dst_c).sum()  # sum of x*x' + y*y'
    b = (src_c[:, 0] * dst_c[:, 1] - src_c[:, 1] * dst_c[:, 0]).sum()
    scale_cos, scale_sin = a / var, b / var
    matrix = np.array([[scale_cos, -scale_sin, 0.0], [scale_sin, scale_cos, 0.0]])
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix.astype(np.float32)


def crop(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The canonical SIZExSIZE crop of ``image`` under ``matrix`` (edge pixels repeated)."""
    return cv2.warpAffine(image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float32).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def heatmaps(points: np.ndarray) -> np.ndarray:
    """NxSIZExSIZE gaussians at N points in crop coordinates: the pose (five landmarks) and
    expression (the mesh's) conditions."""
    points = np.asarray(points, np.float32).reshape(-1, 2)
    d2 = (CENTRES_X[None] - points[:, 0, None, None]) ** 2 + (CENTRES_Y[None] - points[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * HEATMAP_SIGMA**2)).astype(np.float32)


def network_input(crop_rgb: np.ndarray, points: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
    """The generator's input for one crop: masked RGB in [-1, 1], the mask, the five
    landmarks' heatmaps (9 channels), and with ``expression`` (8x2 crop pixels) its 8 more.

    Pixels inside FACE_MASK are zero before they reach the network, so nothing of the
    original face inside it can leak; of its shape, only the 5 + 8 points do.
    """
    rgb = crop_rgb.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    rgb *= 1.0 - FACE_MASK[None]
    conditions = [heatmaps(points)] if expression is None else [heatmaps(points), heatmaps(expression)]
    return np.concatenate([rgb, FACE_MASK[None], *conditions]).astype(np.float32)


def neutral_expression(points: np.ndarray) -> np.ndarray:
    """The 8 expression points of a face whose mesh is not known, from its five landmarks:
    mouth closed between its corners, eyes open (lids a sixth of the eye distance apart)."""
    right_eye, left_eye, _, right_mouth, left_mouth = np.asarray(points, np.float32).reshape(5, 2)
    across = left_eye - right_eye
    down = np.array([-across[1], across[0]], np.float32) / 12  # a twelfth of the eye distance, towards the chin
    lips = (right_mouth + left_mouth) / 2
    return np.stack([right_mouth, left_mouth, lips, lips, right_eye - down, right_eye + down, left_eye - down, left_eye + down])
# Pixels just outside the blend region: the surroundings the generated face's colour is matched to.
COLOUR_RING = ((_ellipse(_CENTER, _AXES, grow=BLEND_RING) > 1) & (_ellipse(_CENTER, _AXES, grow=BLEND_RING + 8) <= 1))
