"""The synth anonymiser: each face is replaced by a generated face of nobody.

Per face: align to the canonical crop by its landmarks, blank the face region, generate
(all faces of a frame in one batch), match the colour to the surroundings, and warp the
result back with a feathered edge. The latent code comes from the track id and a
per-run secret, so one person keeps one synthetic identity while tracked, and the same
input gives the same output.

Fail closed: a face the generator cannot safely replace (no landmarks, too small, or
whose aligned face region would not cover its detection box) is pixelated instead.

A generator trained with the face mesh (``veil train --condition mesh``: 17 input channels)
is also given each face's mouth and eyelids from its mesh (veil.engines.mesh.EXPRESSION),
so the face it draws opens the mouth and closes the eyes as the person does; a face without
a confident mesh gets a neutral expression from its five landmarks.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from concurrent.futures import Future
from dataclasses import dataclass

import cv2
import numpy as np

from veil.engines import GENERATOR_WEIGHTS, align
from veil.engines.engine import MAX_BATCH
from veil.engines.mesh import EXPRESSION
from veil.errors import InputError
from veil.kernels.composite import paste
from veil.stream.anonymisers.classic import Anonymiser
from veil.stream.faces import Faces

MIN_FACE_PX = 16  # smaller faces are pixelated: nothing recognisable to keep, nothing to draw
# The part of a detection box that holds eyes, nose, mouth and cheeks: the ellipse in
# x 20-80 %, y 30-90 % of the box (the top of a box is forehead, which is not replaced).
CORE_X, CORE_Y = (0.2, 0.8), (0.3, 0.9)
# Share of that core the generated region must cover. On 59 glint24 and video faces,
# 95 % of YuNet's faces reached it; landmarks that do not fit their box fall far short.
COVERAGE = 0.9


def latent_code(secret: bytes, track_id: int) -> np.ndarray:
    """A standard-normal code that only someone with the run's secret can link to the track.

    Not truncated: codes scaled towards the mean gave cleaner faces by eye, but at 0.6 the
    recognisers called 35 % of two-track pairs one person (12.5 % untruncated, glint24).
    """
    digest = hmac.new(secret, f"track:{int(track_id)}".encode(), hashlib.sha256).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(align.LATENT).astype(np.float32)


def generator_uses_mesh(engine) -> bool:
    """Whether a generator engine takes the mesh's expression heatmaps (its image input's
    channels say); anything but Veil's two inputs is refused."""
    if set(engine.input_names) != {"image", "latent"}:
        raise InputError(f"not a Veil generator: it takes {', '.join(engine.input_names)}, not image and latent (veil train writes one)")
    channels = engine.input_types["image"][1][1]
    if channels not in (align.IN_CHANNELS, align.MESH_IN_CHANNELS):
        raise InputError(f"the generator takes {channels} input channels; Veil's take {align.IN_CHANNELS} "
                         f"(five landmarks) or {align.MESH_IN_CHANNELS} (and the face mesh)")
    return channels == align.MESH_IN_CHANNELS


def _core_points(box: np.ndarray, n: int = 9) -> np.ndarray:
    x1, y1, x2, y2 = box
    xs, ys = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    inside = xs**2 + ys**2 <= 1
    cx, half_w = x1 + (x2 - x1) * sum(CORE_X) / 2, (x2 - x1) * (CORE_X[1] - CORE_X[0]) / 2
    cy, half_h = y1 + (y2 - y1) * sum(CORE_Y) / 2, (y2 - y1) * (CORE_Y[1] - CORE_Y[0]) / 2
    return np.stack([cx + xs[inside] * half_w, cy + ys[inside] * half_h], 1)


def covers_box(matrix: np.ndarray, box: np.ndarray) -> bool:
    """Whether the generated region, placed by ``matrix``, hides the core of ``box``."""
    points = np.rint(align.transform_points(_core_points(box), matrix)).astype(int)
    inside = np.all((points >= 0) & (points < align.SIZE), axis=1)
    covered = np.zeros(len(points), bool)
    covered[inside] = align.BLEND_ALPHA[points[inside, 1], points[inside, 0]] >= 0.5
    return covered.mean() >= COVERAGE


def match_colour(generated: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Shift the generated crop so its surroundings have the original's mean colour."""
    shift = original[align.COLOUR_RING].astype(np.float32).mean(0) - generated[align.COLOUR_RING].astype(np.float32).mean(0)
    return np.clip(generated + shift, 0, 255)


@dataclass(frozen=True)
class AlignedFace:
    """One face the generator can replace, in the canonical crop's coordinates."""

    index: int  # in the frame's Faces
    track: int  # picks the latent code; an untracked face gets one of its own
    matrix: np.ndarray  # 2x3, frame pixel -> crop pixel
    crop: object  # SIZExSIZEx3 BGR, the original face: uint8 numpy, or float on the device path
    points: np.ndarray  # 5x2 landmarks in crop pixels
    grey: np.ndarray  # SIZExSIZE uint8, the crop in grey on the host: what motion is measured on
    expression: np.ndarray | None = None  # 8x2 crop pixels, for a generator conditioned on the mesh


def _submit(engine, inputs: dict) -> Future:
    """The engine's call as a future: asynchronous where the engine queues work
    (``BatchingEngine``), done at once otherwise."""
    submit = getattr(engine, "submit", None)
    if submit is not None:
        return submit(inputs)
    done: Future = Future()
    try:
        done.set_result(engine.run(inputs))
    except Exception as error:  # noqa: BLE001 - re-raised by result()
        done.set_exception(error)
    return done


class Generation:
    """Generated faces on their way: ``done()`` polls, ``result()`` waits for them all."""

    def __init__(self, futures: list[Future], count: int, to_crop=None):
        self._futures, self.count = futures, count
        self._crops: list | None = None  # converted once, however many faces collect from it
        self._to_crop = to_crop or (lambda face: (face.transpose(1, 2, 0)[:, :, ::-1] + 1) * 127.5)

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def result(self, timeout: float | None = None) -> list[np.ndarray]:
        """SIZExSIZEx3 float BGR crops (0..255, not yet colour matched), in request order
        (numpy, or tensors on the device path)."""
        if self._crops is None:
            faces = [face for f in self._futures for face in f.result(timeout)[0]]
            # strict: a missing result is an error (the frame is then covered), never a raw face
            if len(faces) != self.count:
                raise RuntimeError(f"the generator returned {len(faces)} faces for {self.count}")
            self._crops = [self._to_crop(face) for face in faces]
        return self._crops


class SynthAnonymiser:
    """Same surface as ``Anonymiser``: ``apply(image_bgr, faces) -> image``."""

    def __init__(self, engine=None, secret: bytes | None = None, fallback: Anonymiser | None = None,
                 intra_op_threads: int | None = None, uses_mesh: bool = False):
        """``uses_mesh``: the generator takes the mesh's expression too (``generator_uses_mesh``)."""
        if engine is None:
            from veil.engines.runtime import open_engine

            engine = open_engine(GENERATOR_WEIGHTS, "onnxruntime", "cpu", intra_op_threads=intra_op_threads)
        self.engine = engine
        self.secret = os.urandom(16) if secret is None else secret
        self.fallback = fallback or Anonymiser(mode="pixelate")
        self.uses_mesh = uses_mesh

    @property
    def wants_mesh(self) -> bool:
        """Whether the faces it is given should carry their meshes (veil.stream.stages.mesh)."""
        return self.uses_mesh or self.fallback.wants_mesh

    def align(self, image: np.ndarray, faces: Faces) -> tuple[list[AlignedFace], list[int]]:
        """The faces the generator can safely replace, and the indices of those it cannot."""
        usable, fallback = [], []
        for i in range(len(faces)):
            box = faces.boxes[i]
            matrix = align.similarity(faces.landmarks[i]) if min(box[2:] - box[:2]) >= MIN_FACE_PX else None
            if matrix is None or not covers_box(matrix, box):
                fallback.append(i)
            else:
                usable.append((i, matrix))
        crops = self.crops(image, [matrix for _, matrix in usable])
        greys = self.greys(crops)
        aligned = [
            AlignedFace(i, int(faces.track_ids[i]) if faces.track_ids[i] >= 0 else -1 - i,  # untracked: one code per face
                        matrix, crop, points := align.transform_points(faces.landmarks[i], matrix), grey,
                        self._expression(faces.mesh[i], matrix, points) if self.uses_mesh else None)
            for (i, matrix), crop, grey in zip(usable, crops, greys, strict=True)
        ]  # fmt: skip
        return aligned, fallback

    @staticmethod
    def _expression(mesh: np.ndarray, matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
        """A face's 8 expression points in crop pixels: its mesh's, or neutral without one."""
        expression = mesh[list(EXPRESSION)]
        return align.transform_points(expression, matrix) if np.isfinite(expression).all() else align.neutral_expression(points)

    def crops(self, image: np.ndarray, matrices: list[np.ndarray]) -> list:
        return [align.crop(image, matrix) for matrix in matrices]

    def greys(self, crops: list) -> list[np.ndarray]:
        return [cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) for crop in crops]

    def generate(self, faces: list[AlignedFace]) -> Generation:
        """Start generating ``faces`` (in batches of at most MAX_BATCH)."""
        latents = np.stack([latent_code(self.secret, face.track) for face in faces]) if faces else None
        futures = [
            _submit(self.engine, {"image": self.network_inputs(faces[start:start + MAX_BATCH]), "latent": self.beside(latents[start:start + MAX_BATCH])})
            for start in range(0, len(faces), MAX_BATCH)
        ]
        return Generation(futures, len(faces), self.to_crop)

    def network_inputs(self, faces: list[AlignedFace]):
        return np.stack([align.network_input(face.crop[:, :, ::-1], face.points, face.expression) for face in faces])

    def beside(self, array: np.ndarray):
        """A small host array where this anonymiser's images live."""
        return array

    to_crop = None  # the generator's output to a crop: Generation's numpy default

    def composite(self, image: np.ndarray, faces: list[tuple[object, np.ndarray | None, AlignedFace]]) -> np.ndarray:
        """A copy of ``image`` with each (generated crop, flow or None, aligned face) moved
        by its flow, colour matched to the original and pasted."""
        out = image.copy()
        for generated, flow, face in faces:
            moved = generated if flow is None else warp_crop(generated, flow)
            paste(out, match_colour(moved, face.crop), face.matrix)
        return out

    def apply(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        aligned, fallback = self.align(image, faces)
        generated = self.generate(aligned).result()
        return self.cover(self.composite(image, [(crop, None, face) for crop, face in zip(generated, aligned, strict=True)]), faces, fallback)

    def cover(self, image: np.ndarray, faces: Faces, indices: list[int]) -> np.ndarray:
        """The fallback over the faces at ``indices``."""
        return self.fallback.apply(image, faces[np.array(indices, int)]) if indices else image

    def thumbnail(self, image: np.ndarray) -> np.ndarray:
        """64x36 grey float32: enough to see a scene cut."""
        # a 256x144 sample of pixels first: a cut is a large-scale change (5x cheaper than slicing)
        small = cv2.cvtColor(cv2.resize(image, (256, 144), interpolation=cv2.INTER_NEAREST), cv2.COLOR_BGR2GRAY)
        return cv2.resize(small, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)


_GRID = np.stack(np.mgrid[0:align.SIZE, 0:align.SIZE][::-1], -1).astype(np.float32)  # x, y per crop pixel


def warp_crop(crop: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp of a canonical crop by a flow: crop(p + flow(p)) (kernels/warp.cu on the GPU)."""
    map_xy = _GRID + flow
    return cv2.remap(crop, map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
