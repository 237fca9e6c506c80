"""Synth on keyframes only; between them each face's de-identified crop is carried along
the original face's motion.

Both the keyframe and the current frame are seen in the canonical crop of
``veil.engines.align``: aligning each frame by its landmarks' similarity transform takes out
the head's motion, and a dense residual flow (DIS) between the two original crops takes
out the rest (blinks, the mouth, the landmarks' own error). The keyframe's generated
crop is warped by that flow and composited with the current frame's alignment, so the
synthetic face moves, turns and talks with the person without the generator running.

A track gets a new keyframe when it is new; every ``every`` frames at most; earlier
when the warp stops explaining the original (the warped original keyframe crop differs
from the current crop by more than ``residual`` grey levels inside the face: an
occlusion, a turn the flow cannot follow), when the flow moves the face far from where
the generator drew it, when the pose or scale changes a lot, and after a scene cut.

Why the flow has a limit: the warp carries the original face's own motion (its
expression, and where its features really are when the landmarks err) into the
generated face. Measured on the crowd clip, warped faces were re-identified about twice
as often as faces generated on the same frames, and the excess sat in the faces whose
flow was large (benchmarks/PROPAGATION.md). Past ``FLOW_LIMIT`` a face is regenerated.

What the warp carries of the face it hides, exactly: the flow field, a displacement of
the keyframe's generated pixels of at most ``FLOW_MAX`` crop pixels anywhere and at most
``FLOW_LIMIT`` on average inside the face (past that the face is regenerated instead), and
the keyframe decisions (whether this frame regenerates). No pixel value of the hidden face
reaches the output: the warp only moves generated pixels (the generator never saw the face
it replaces), the colour is matched on a ring outside the face mask, and the face region
is placed by the current frame's landmarks. tests/stream/test_propagate.py holds the bound: with
the hidden pixels changed, a warped frame is the keyframe's face moved by a flow within
it, and nothing else changes.

Fail closed: the face region must cover the detection as in synth, and a face with no
generated crop yet is pixelated. With
``wait=False`` (live) generation runs beside the stream: the previous keyframe keeps
being warped until the new one is ready. With ``wait=True`` (files) each keyframe is
awaited, so a file's output never depends on timing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from veil.engines import align
from veil.stream.anonymisers.synth import AlignedFace, Generation, SynthAnonymiser, warp_crop
from veil.stream.faces import Faces

# Chosen by measurement on the talking-head and crowd clips (benchmarks/PROPAGATION.md).
KEYFRAME_EVERY = 16
RESIDUAL = 16.0  # mean absolute grey-level error inside the face, warped keyframe vs now
FLOW_LIMIT = 6.0  # mean crop pixels the flow moves the face by (the crop is 128 px wide)
# Crop pixels any one pixel of the face may be moved by: the flow is clipped to it, so what
# the warp carries is bounded everywhere, not only on average. Measured with the shipped
# defaults on faces under FLOW_LIMIT: 0.27 % (crowd_arcade), 0.20 % (stage_audience), 0.09 %
# (selfie) and 0 % (talking_head_d13) of face pixels moved further; the longest, 38 px.
FLOW_MAX = 12.0
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST  # 4x cheaper than MEDIUM, and no more re-identifiable
NOSE_SHIFT = 6.0  # crop pixels the nose may move relative to eyes and mouth (a turn or a nod)
SCALE_CHANGE = 1.5  # the face grew or shrank this much: the keyframe's detail no longer fits
SCENE_CUT = 40.0  # mean absolute grey difference of consecutive 64x36 thumbnails
GENERATOR_TIMEOUT_S = 60.0
_FACE = align.FACE_MASK > 0


def _scale(matrix: np.ndarray) -> float:
    return float(np.hypot(matrix[0, 0], matrix[1, 0]))


@dataclass
class Keyframe:
    """What a track's warps start from: the original crop and its generated replacement."""

    frame: int
    grey: np.ndarray  # the original aligned crop, grey: the flow's reference
    points: np.ndarray  # its landmarks in crop pixels
    scale: float  # its alignment's scale (crop pixels per frame pixel)
    face: np.ndarray | None = None  # generated crop, float BGR; None while generating
    generation: Generation | None = None
    position: int = 0  # this face's place in ``generation``

    def collect(self, timeout: float | None = None) -> bool:
        """Take the generated crop once it is ready; True when the keyframe is usable."""
        if self.face is None and (timeout is not None or self.generation.done()):
            self.face = self.generation.result(timeout)[self.position]
            self.generation = None
        return self.face is not None


@dataclass
class _Track:
    current: Keyframe | None = None  # the keyframe being warped
    pending: Keyframe | None = None  # the next one, while it is generated


class PropagatingSynth:
    """Same surface as ``SynthAnonymiser`` but stateful: one per stream, frames in order."""

    def __init__(self, synth: SynthAnonymiser, every: int = KEYFRAME_EVERY, *, wait: bool = True, residual: float = RESIDUAL,
                 flow_limit: float = FLOW_LIMIT):
        if every < 1:
            raise ValueError(f"keyframe interval must be at least 1 frame, got {every}")
        self.synth, self.every, self.wait, self.residual, self.flow_limit = synth, every, wait, residual, flow_limit
        self.flow = cv2.DISOpticalFlow_create(DIS_PRESET)
        self._tracks: dict[int, _Track] = {}
        self._thumbnail: np.ndarray | None = None
        self.frame = -1
        self.keyframes = 0  # faces sent to the generator, for reports
        self.warped = 0  # faces drawn from a warped keyframe

    def apply(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        self.frame += 1
        cut = self._scene_cut(image)
        aligned, fallback = self.synth.align(image, faces)
        # Forget the tracks the tracker dropped, but not one pixelated for a frame: it keeps
        # its keyframe. Untracked faces (negative ids) are never carried to another frame.
        here = {int(t) for t in faces.track_ids if t >= 0}
        self._tracks = {track: state for track, state in self._tracks.items() if track in here}
        for face in aligned:
            self._tracks.setdefault(face.track, _Track())

        flows: dict[int, tuple[Keyframe, np.ndarray]] = {}

        def flow_to(face: AlignedFace, key: Keyframe) -> np.ndarray:
            """The face's flow to ``key``, measured at most once a frame, and only when asked."""
            cached = flows.get(face.track)
            if cached is None or cached[0] is not key:
                cached = flows[face.track] = (key, self._flow(face.grey, key.grey))
            return cached[1]

        requests = []
        for face in aligned:
            track = self._tracks[face.track]
            if track.pending is not None and track.pending.collect():
                track.current, track.pending = track.pending, None
            if track.pending is None and self._needs_keyframe(track.current, face, flow_to, cut):
                track.pending = Keyframe(self.frame, face.grey, face.points, _scale(face.matrix), position=len(requests))
                requests.append(face)
        if requests:
            generation = self.synth.generate(requests)
            self.keyframes += len(requests)
            for face in requests:
                self._tracks[face.track].pending.generation = generation

        draws = []
        for face in aligned:
            track = self._tracks[face.track]
            if track.pending is not None and track.pending.collect(GENERATOR_TIMEOUT_S if self.wait else None):
                track.current, track.pending = track.pending, None
            key = track.current
            if key is None:
                fallback.append(face.index)  # nothing generated for this face yet
                continue
            flow = None
            if key.frame != self.frame:
                flow = flow_to(face, key)
                self.warped += 1
            draws.append((key.face, flow, face))
        return self.synth.cover(self.synth.composite(image, draws), faces, sorted(fallback))

    def _needs_keyframe(self, key: Keyframe | None, face: AlignedFace, flow_to, cut: bool) -> bool:
        if key is None or cut or self.frame - key.frame >= self.every:
            return True
        nose_shift = np.linalg.norm(face.points[2] - key.points[2])
        growth = _scale(face.matrix) / key.scale
        if nose_shift > NOSE_SHIFT or not 1 / SCALE_CHANGE < growth < SCALE_CHANGE:
            return True
        flow = flow_to(face, key)
        return displacement(flow) > self.flow_limit or residual_error(key.grey, face.grey, flow) > self.residual

    def _flow(self, grey: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Per crop pixel, where it was in ``reference``: grey(p) ~ reference(p + flow(p)),
        no longer than ``FLOW_MAX``."""
        flow = self.flow.calc(grey, reference, None)
        length = np.hypot(flow[..., 0], flow[..., 1])
        too_long = length > FLOW_MAX
        if too_long.any():
            flow[too_long] *= (FLOW_MAX / length[too_long])[:, None]
        return flow

    def _scene_cut(self, image) -> bool:
        previous, self._thumbnail = self._thumbnail, self.synth.thumbnail(image)
        return previous is not None and float(np.abs(self._thumbnail - previous).mean()) > SCENE_CUT


def displacement(flow: np.ndarray) -> float:
    """Mean length of the flow inside the face, in crop pixels."""
    return float(np.hypot(*flow[_FACE].T).mean())


def residual_error(reference: np.ndarray, grey: np.ndarray, flow: np.ndarray) -> float:
    """Mean absolute grey error inside the face after warping ``reference`` onto ``grey``."""
    warped = warp_crop(reference.astype(np.float32), flow)
    return float(np.abs(warped - grey)[_FACE].mean())
