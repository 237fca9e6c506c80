"""What both detectors share: input checks, scaling, tiling, and mapping boxes back.

A detector model only implements ``detect_native`` (faces in the image it is given); this
base class decides which images it is given (the frame scaled to ``input_size``, and
optionally native-resolution tiles for tiny faces) and maps every box back to the frame.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx

from veil.engines.batching import BatchingEngine
from veil.engines.engine import MAX_BATCH, graph_inputs
from veil.engines.runtime import open_engine
from veil.errors import InputError
from veil.stream.faces import Faces, iou_matrix

TILE_SIZE = 640
TILE_OVERLAP = 160  # a face up to this size lies whole inside at least one tile
LIVE_EDGE_PAD = 0.06  # of the longest side: see ``edge_pad``
MIN_VISIBLE = 0.35  # a box less inside the frame than this is the margin's mirror image
NATIVE_MAX = 4096  # longest frame side a TensorRT engine takes at native resolution (UHD fits)
PAD_MULTIPLE = 32  # both models take heights and widths in multiples of 32


def check_image(image) -> None:
    """Raise InputError unless ``image`` is a non-empty HxWx3 uint8 (BGR) array."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"detector input must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"detector input must be uint8 BGR, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"detector input must be HxWx3 (BGR), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"detector input is empty: shape {image.shape}")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes (x1, y1, x2, y2) that greedy non-maximum suppression keeps.

    Callers filter by score first; OpenCV here also drops scores of exactly 0.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(np.float64).tolist(), 0.0, iou_threshold)
    return np.asarray(keep, np.int64).reshape(-1)


DARK_MEAN_LUMA = 60  # of 255: dim rooms, night streets, audiences


BAR_LUMA = 24  # rows and columns at the edges no brighter than this are letterbox or pillarbox bars
BAR_FLAT = 8  # ... and a bar is flat: levels in it differ by no more than this (a night scene's dark edge has texture)
BAR_STEP = 8  # bars are found on every 8th row and column: plenty for a mean and for edges


def _grey_sample(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image[::BAR_STEP, ::BAR_STEP]), cv2.COLOR_BGR2GRAY)


def _lit_span(peaks: np.ndarray) -> tuple[int, int]:
    """First and one past the last index brighter than a bar; the whole range if none is."""
    lit = np.flatnonzero(peaks > BAR_LUMA)
    return (int(lit[0]), int(lit[-1]) + 1) if len(lit) else (0, len(peaks))


def is_dark(image: np.ndarray) -> bool:
    """Whether a frame's picture is dim enough that faces in it are worth a second,
    brightened look. Black bars (pillarboxed phone video, letterboxed film) are not the
    picture: judged with them, a bright picture between them looked dark."""
    sample = _grey_sample(image)
    top, bottom = _lit_span(sample.max(axis=1))
    left, right = _lit_span(sample.max(axis=0))
    return float(sample[top:bottom, left:right].mean()) < DARK_MEAN_LUMA


def picture_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the picture between flat black bars, in pixels; the
    whole frame where there are none. Detection searches only this: a phone video
    pillarboxed in 16:9 is a third of its frame, and its bars cost two thirds of the
    detector's time for nothing. A side is cut only where its bar is flat black (no level
    above BAR_LUMA, none differing by more than BAR_FLAT), so a night scene's dark edge,
    where a dim face may be, stays in; the cut keeps one sampled row or column of bar."""
    sample = _grey_sample(image)
    height, width = image.shape[:2]
    edges = []
    for axis, length in ((1, height), (0, width)):  # rows, then columns
        peaks = sample.max(axis=axis)
        start, end = _lit_span(peaks)
        start, end = max(start - 1, 0), min(end + 1, len(peaks))  # a sampled line of bar stays: the picture's edge lies between samples
        bands = (np.take(sample, range(start), axis=1 - axis), np.take(sample, range(end, len(peaks)), axis=1 - axis))
        flat = [band.size == 0 or int(band.max()) - int(band.min()) <= BAR_FLAT for band in bands]
        edges.append((start * BAR_STEP if flat[0] else 0, min(end * BAR_STEP, length) if flat[1] else length))
    (top, bottom), (left, right) = edges
    return top, bottom, left, right


def with_local_contrast(image: np.ndarray) -> np.ndarray:
    """CLAHE on lightness: dark faces gain contrast without blowing out bright ones."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def merge_overlapping(faces: Faces, iou_threshold: float) -> Faces:
    """Merge detections of one face from several passes into one box covering all of them.

    Plain NMS would keep whichever box scored best, which can be the half of a face that a
    tile border cut; the union keeps the whole face covered (fail closed). Score and
    landmarks come from the best-scoring member.
    """
    if len(faces) == 0:
        return faces
    order = np.argsort(-faces.scores, kind="stable")
    overlaps = iou_matrix(faces.boxes, faces.boxes) > iou_threshold
    unclaimed = np.ones(len(faces), bool)
    leaders, boxes = [], []
    for leader in order:
        if not unclaimed[leader]:
            continue
        members = overlaps[leader] & unclaimed
        members[leader] = True
        unclaimed[members] = False
        group = faces.boxes[members]
        leaders.append(leader)
        boxes.append(np.concatenate([group[:, :2].min(axis=0), group[:, 2:].max(axis=0)]))
    merged = faces[np.asarray(leaders)]
    return Faces(np.asarray(boxes), merged.scores, merged.landmarks, merged.track_ids, merged.detected)


def mapped(faces: Faces, scale_x: float, scale_y: float, offset_x: float = 0.0,
           offset_y: float = 0.0) -> Faces:
    """Faces found in a crop at (offset_x, offset_y) resized by (scale_x, scale_y), in frame pixels."""
    scale = np.array([scale_x, scale_y], np.float32)
    offset = np.array([offset_x, offset_y], np.float32)
    boxes = faces.boxes / np.tile(scale, 2) + np.tile(offset, 2)
    landmarks = faces.landmarks / scale + offset
    return Faces(boxes, faces.scores, landmarks, faces.track_ids, faces.detected)


def _visible_fraction(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    inner = boxes.copy()
    inner[:, [0, 2]] = inner[:, [0, 2]].clip(0, width)
    inner[:, [1, 3]] = inner[:, [1, 3]].clip(0, height)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return np.prod(np.maximum(inner[:, 2:] - inner[:, :2], 0), axis=1) / np.maximum(area, 1e-6)


def tile_starts(length: int) -> list[int]:
    """Evenly spread starts of TILE_SIZE windows covering ``length`` with TILE_OVERLAP or more."""
    if length <= TILE_SIZE:
        return [0]
    count = int(np.ceil((length - TILE_OVERLAP) / (TILE_SIZE - TILE_OVERLAP)))
    return [round(i * (length - TILE_SIZE) / (count - 1)) for i in range(count)]


def _padded(length: float) -> int:
    return -(-round(length) // PAD_MULTIPLE) * PAD_MULTIPLE


def model_shapes(input_size: int | None, tiles: bool, edge_pad: float, batch: int = 1) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) Bx3xHxW that a detector's passes give its model: what TensorRT builds for."""
    longest = NATIVE_MAX if input_size is None else max(input_size, TILE_SIZE if tiles else 0)
    longest = _padded(longest * (1 + 2 * edge_pad))
    optimum = min(_padded(input_size or 1920), longest)
    return (1, 3, PAD_MULTIPLE, PAD_MULTIPLE), (1, 3, optimum, optimum), (batch, 3, longest, longest)


def pass_sizes(input_size: int | None, height: int, width: int) -> list[tuple[int, int]]:
    """The sizes (width, height) a frame is searched at: scaled so that its longest side is
    ``input_size``, and at its own size too where it is smaller than that (or where
    ``input_size`` is None). The GPU path's detector searches the same ones."""
    longest = max(height, width)
    sizes = []
    if input_size is not None and input_size != longest:
        scale = input_size / longest
        sizes.append((max(1, round(width * scale)), max(1, round(height * scale))))
    if input_size is None or longest <= input_size:
        sizes.append((width, height))
    return sizes


class ScaledDetector:
    """Runs a model's ``detect_native`` on the scaled frame (and tiles) and maps results back.

    input_size: the longest side a larger frame is scaled down to before detection; None
      runs at native resolution; "own": the model's INPUT_SIZE. A smaller frame is searched twice, at native size and
      scaled up to input_size, and the results merged: upscaling finds tiny faces but
      loses dim, soft ones that the native pass finds (measured on a dark 360p audience).
    tiles: also run on overlapping native-resolution TILE_SIZE tiles and merge, for faces
      too small to survive the downscale.
    A dark frame is searched again after a local contrast boost, merged the same way.
    edge_pad: with a mirrored margin this wide (a fraction of the longest side) around
      each pass, a face cut by the frame edge looks whole enough to be found on the
      frame it enters, where the bare image showed only a chin. Live runs use it
      (``LIVE_EDGE_PAD``), having no backfill to catch such a face a few frames later;
      file runs keep 0, the setting their privacy figures were measured with.
    score_threshold: faces scoring below are dropped (None: the model's SCORE_THRESHOLD). Kept low on purpose: a missed face
      leaks, a false positive only blurs a patch of background.
    nms_threshold: IoU above which two boxes are taken to be one face.
    backend, device, intra_op_threads: which engine runs the model where (veil.engines.runtime),
      and with how many CPU threads.
    batch_wait_s: share the model between threads (the cameras of ``veil cameras``): passes
      of the same size asked for at about the same time run as one batch, the first waiting
      at most this long for the others (veil.engines.batching). None: every pass alone.
    """

    INPUT_SIZE: int  # each model's own defaults, measured for it (see its class)
    SCORE_THRESHOLD: float
    OUTPUT_BATCH_AXIS = 0  # where the model's outputs stack a batch's images

    @staticmethod
    def model() -> onnx.ModelProto:
        """The model's ONNX graph, ready for any engine backend."""
        raise NotImplementedError

    @classmethod
    def input_shapes(cls, input_size: int | None, tiles: bool, edge_pad: float, batch: int) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) shapes of the model's input over these settings' passes (TensorRT builds for them)."""
        return model_shapes(input_size, tiles, edge_pad, batch)

    def __init__(self, input_size: int | None | str = "own", tiles: bool = False, score_threshold: float | None = None,
                 nms_threshold: float = 0.3, backend: str = "onnxruntime", device: str = "cpu",
                 intra_op_threads: int | None = None, edge_pad: float = 0.0, batch_wait_s: float | None = None):
        input_size = self.INPUT_SIZE if input_size == "own" else input_size
        score_threshold = self.SCORE_THRESHOLD if score_threshold is None else score_threshold
        model = self.model()
        if input_size is not None and input_size < 32:
            raise InputError(f"input_size must be at least 32 pixels or None, got {input_size}")
        if not 0.0 <= score_threshold <= 1.0:
            raise InputError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise InputError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if not 0.0 <= edge_pad <= 0.5:
            raise InputError(f"edge_pad must be in [0, 0.5], got {edge_pad}")
        self.edge_pad = edge_pad
        self.input_size = input_size
        self.tiles = tiles
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.input_name = graph_inputs(model)[0].name
        batch = 1 if batch_wait_s is None else MAX_BATCH
        self.engine = open_engine(model, backend, device, intra_op_threads=intra_op_threads,
                                  shapes={self.input_name: self.input_shapes(input_size, tiles, edge_pad, batch)})
        if batch_wait_s is not None:
            self.engine = BatchingEngine(self.engine, wait_s=batch_wait_s, output_axis=self.OUTPUT_BATCH_AXIS)
        self.output_names = self.engine.output_names

    def detect_native(self, image: np.ndarray) -> Faces:
        """Faces in ``image`` (any size), in its pixel coordinates, after NMS."""
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> Faces:
        """Faces in a BGR uint8 frame, in the frame's pixel coordinates. Only the picture
        between black bars is searched (``picture_box``), at the scale the whole frame
        would be searched at, so a face in it is seen at the same size."""
        check_image(image)
        height, width = image.shape[:2]
        top, bottom, left, right = picture_box(image)
        picture = image[top:bottom, left:right]
        views = [picture, with_local_contrast(picture)] if is_dark(picture) else [picture]
        passes = []
        for size in pass_sizes(self.input_size, height, width):
            scaled = (max(1, round(picture.shape[1] * size[0] / width)), max(1, round(picture.shape[0] * size[1] / height)))
            pad = round(self.edge_pad * max(size))  # of the whole frame at this scale, as faces are sized
            passes += [self._detect_at(view, scaled, pad) for view in views]
        if self.tiles and (height > TILE_SIZE or width > TILE_SIZE):
            for tile_top in tile_starts(picture.shape[0]):
                for tile_left in tile_starts(picture.shape[1]):
                    tile = picture[tile_top:tile_top + TILE_SIZE, tile_left:tile_left + TILE_SIZE]
                    passes.append(mapped(self.detect_native(tile), 1.0, 1.0, tile_left, tile_top))
        faces = passes[0] if len(passes) == 1 else merge_overlapping(Faces.concat(passes), self.nms_threshold)
        return mapped(faces, 1.0, 1.0, left, top).clipped(width, height)

    def _detect_at(self, image: np.ndarray, size: tuple[int, int], pad: int) -> Faces:
        if size == (image.shape[1], image.shape[0]):
            return self._detect_padded(image, pad)
        interpolation = cv2.INTER_AREA if max(size) < max(image.shape[:2]) else cv2.INTER_LINEAR
        resized = cv2.resize(image, size, interpolation=interpolation)
        # rounding the size changes the scale slightly; map back with each axis's own
        return mapped(self._detect_padded(resized, pad), size[0] / image.shape[1], size[1] / image.shape[0])

    def _detect_padded(self, image: np.ndarray, pad: int) -> Faces:
        if pad == 0:
            return self.detect_native(image)
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        faces = mapped(self.detect_native(padded), 1.0, 1.0, -pad, -pad)
        return faces[_visible_fraction(faces.boxes, image.shape[1], image.shape[0]) >= MIN_VISIBLE]
