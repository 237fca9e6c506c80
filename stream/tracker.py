"""Multi-face tracker: keeps faces masked between detections and after the detector loses them.

A privacy tracker differs from an analytics tracker in one way that decides the design:
it may add boxes but never hide one. So every detection is output on the frame it
arrives, with a track id at once (no confirmation delay), and a lost track keeps masking
a region that grows with the motion uncertainty until ``max_coast_s`` has passed.

Each track is a constant-velocity Kalman filter on the box centre and size (state cx,
cy, w, h, vx, vy, vw, vh, in pixels and pixels per frame). Detections are assigned to
tracks by Hungarian matching on IoU, with a centre-distance fallback so that a small
fast face whose boxes no longer overlap from one frame to the next keeps its track.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from veil.errors import InputError
from veil.stream.faces import Faces, iou_matrix

# One step is one frame: position += velocity.
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)

# Noise standard deviations as fractions of the face size (as DeepSORT does): both a
# detector's jitter and a face's unmodelled acceleration scale with its size in pixels.
_STD_POSITION = 1 / 20
_STD_VELOCITY = 1 / 160

# Cost of a pair outside every gate; finite so that linear_sum_assignment always
# succeeds, and large enough that no such pair is preferred over a real match.
_NO_MATCH = 1e6


# Bounds on a coasting box, in face sizes. Measured on a dense overhead crowd, unbounded
# growth turned flickering small detections into blobs over most of the frame.
MAX_MARGIN = 1.0  # grown by at most one face size per side
MAX_SPEED = 0.5  # per frame
MAX_SIZE_GROWTH = 1.5
CONFIRM_SCORE = 0.5

def _xywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def _box(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _real(value, name: str, rule: str, ok) -> float:
    """``value`` as a float, or an InputError that names the rule it breaks."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not ok(value)
    ):
        raise InputError(f"{name} must be {rule}, got {value!r}")
    return float(value)


@dataclass
class _Track:
    """One face: its Kalman state and what its last detection said."""

    id: int
    mean: np.ndarray  # cx, cy, w, h, vx, vy, vw, vh
    cov: np.ndarray  # 8x8
    box: np.ndarray  # last detected box, x1 y1 x2 y2
    landmarks: np.ndarray  # last detected landmarks, 5x2
    score: float
    missed: int = 0  # frames since the last detection
    hits: int = 1  # detections matched so far
    best_score: float = 0.0

    @classmethod
    def start(cls, track_id: int, box, landmarks, score) -> _Track:
        """A track at the detection, at rest, with a wide velocity uncertainty."""
        z = _xywh(box)
        size = max(z[2], z[3], 1.0)
        std = np.r_[np.full(4, 2 * _STD_POSITION * size), np.full(4, 10 * _STD_VELOCITY * size)]
        mean = np.r_[z, np.zeros(4)]
        return cls(track_id, mean, np.diag(std**2), np.array(box, float), np.array(landmarks), float(score), best_score=float(score))

    @property
    def confirmed(self) -> bool:
        """Seen twice, once with a confident score: a face, not a flicker of the detector."""
        return self.hits > 1 and self.best_score >= CONFIRM_SCORE

    def size(self) -> float:
        return max(self.mean[2], self.mean[3], 1.0)

    def predict(self) -> None:
        size = self.size()
        std = np.r_[np.full(4, _STD_POSITION * size), np.full(4, _STD_VELOCITY * size)]
        self.mean = _F @ self.mean
        self.cov = _F @ self.cov @ _F.T + np.diag(std**2)
        self.missed += 1

    def correct(self, box, landmarks, score) -> None:
        """Fold in a detection; the detection itself is what gets output, not the filtered box."""
        z = _xywh(box)
        r = (_STD_POSITION * max(z[2], z[3], 1.0)) ** 2
        innovation_cov = self.cov[:4, :4] + np.eye(4) * r
        gain = np.linalg.solve(innovation_cov, self.cov[:4, :]).T
        self.mean = self.mean + gain @ (z - self.mean[:4])
        self.cov = self.cov - gain @ self.cov[:4, :]
        self.box = np.array(box, float)
        self.landmarks = np.array(landmarks)
        self.score = float(score)
        self.missed = 0
        self.hits += 1
        self.best_score = max(self.best_score, float(score))

    def predicted_box(self) -> np.ndarray:
        """Where the filter expects the face, for matching; sizes kept positive."""
        cx, cy, w, h = self.mean[:4]
        return _box(cx, cy, max(w, 1.0), max(h, 1.0))

    def margins(self, growth_per_frame: float, speed_growth: float) -> tuple[float, float]:
        """How far, per side, a coasting box reaches beyond the predicted face (x, y).

        Each frame without a detection adds ``growth_per_frame`` of the face size (for
        motion the filter has not seen: a sudden start, a turn) plus ``speed_growth`` of
        the estimated speed (for a wrong velocity: the face slowed down or sped up).
        """
        w, h = self._coasting_size()
        # A face does not cross half its own width in one frame; faster "speed" is the
        # jitter of a poorly seen face, and growing by it only blots out the scene.
        speed = min(math.hypot(self.mean[4], self.mean[5]), MAX_SPEED * max(w, h))
        return (
            min(self.missed * (growth_per_frame * w + speed_growth * speed), MAX_MARGIN * w),
            min(self.missed * (growth_per_frame * h + speed_growth * speed), MAX_MARGIN * h),
        )

    def coasting_box(self, growth_per_frame: float, speed_growth: float) -> np.ndarray:
        """The predicted box grown by the uncertainty accumulated since the last detection."""
        w, h = self._coasting_size()
        margin_x, margin_y = self.margins(growth_per_frame, speed_growth)
        return _box(self.mean[0], self.mean[1], w + 2 * margin_x, h + 2 * margin_y)

    def _coasting_size(self) -> tuple[float, float]:
        """The predicted size, between the last detection's (a lost face is not assumed to
        shrink) and MAX_SIZE_GROWTH times it (size velocity from noisy boxes runs away)."""
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return float(np.clip(self.mean[2], w, MAX_SIZE_GROWTH * w)), float(np.clip(self.mean[3], h, MAX_SIZE_GROWTH * h))

    def coasting_landmarks(self) -> np.ndarray:
        """The last landmarks moved and scaled from the last detected box to the predicted one."""
        last = _xywh(self.box)
        cx, cy, w, h = self.mean[:4]
        scale = np.array([max(w, 1.0) / max(last[2], 1.0), max(h, 1.0) / max(last[3], 1.0)])
        return (self.landmarks - last[:2]) * scale + np.array([cx, cy])


class Tracker:
    """Tracks faces across frames and says, for every frame, which regions to mask.

    max_coast_s: how long a track that no detection matches keeps being output.
    tentative_coast_s: the same for a track not yet confirmed (seen twice, once scoring
      CONFIRM_SCORE or more), capped at max_coast_s. On a dense overhead crowd most such
      tracks were the detector's low-score flickers, and a full second of coasting boxes
      for each blotted out the scene; a real face is nearly always seen again.
    fps: frames per second of the stream, to turn ``max_coast_s`` into frames.
    iou_threshold: the least IoU between a track's predicted box and a detection for
      them to match on overlap.
    growth_per_frame, speed_growth: how fast a coasting box grows, per frame since the
      last detection, as fractions of the face size and of its speed (see
      ``_Track.margins``). Until a second detection shows a new face's velocity, only
      ``growth_per_frame`` covers its motion.
    centre_gate: the fallback match for detections that do not overlap the prediction
      enough: the detection's centre lies within this many face sizes (plus the coasting
      margin) of the predicted centre.
    """

    def __init__(
        self,
        *,
        max_coast_s: float = 1.0,
        tentative_coast_s: float = 0.25,
        fps: float = 25.0,
        iou_threshold: float = 0.2,
        growth_per_frame: float = 0.05,
        speed_growth: float = 0.5,
        centre_gate: float = 1.0,
    ):
        fps = _real(fps, "fps", "a finite number > 0", lambda v: v > 0)
        max_coast_s = _real(max_coast_s, "max_coast_s", "a finite number >= 0", lambda v: v >= 0)
        tentative_coast_s = _real(tentative_coast_s, "tentative_coast_s", "a finite number >= 0", lambda v: v >= 0)
        self.iou_threshold = _real(iou_threshold, "iou_threshold", "in (0, 1]", lambda v: 0 < v <= 1)
        self.growth_per_frame = _real(growth_per_frame, "growth_per_frame", "a finite number >= 0", lambda v: v >= 0)
        self.speed_growth = _real(speed_growth, "speed_growth", "a finite number >= 0", lambda v: v >= 0)
        self.centre_gate = _real(centre_gate, "centre_gate", "a finite number > 0", lambda v: v > 0)
        self.max_coast_frames = round(max_coast_s * fps)
        self.tentative_coast_frames = min(round(tentative_coast_s * fps), self.max_coast_frames)
        self._tracks: list[_Track] = []
        self._next_id = 0

    def update(self, detections: Faces | None, width: int, height: int) -> Faces:
        """The faces to mask on this frame: every detection, and every track still coasting.

        ``detections`` is None where the detector did not run on this frame; every track
        is then predicted forward. Detected faces are output with their detection's box,
        landmarks and score; coasting ones with their grown predicted box, moved
        landmarks and last score. Boxes are clipped to the frame, but no detection is
        dropped, even one left with no area. A bad argument raises
        InputError before any state changes, so the tracker stays usable.
        """
        self._check(detections, width, height)
        for track in self._tracks:
            track.predict()
        if detections is not None:
            self._assign(detections)
        self._tracks = [t for t in self._tracks if self._alive(t, width, height)]
        return self._output(width, height)

    @staticmethod
    def _check(detections, width, height) -> None:
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise InputError(f"{name} must be an int > 0, got {value!r}")
        if detections is None:
            return
        if not isinstance(detections, Faces):
            raise InputError(f"detections must be Faces or None, got {type(detections).__name__}")
        boxes = detections.boxes
        if not np.isfinite(boxes).all():
            raise InputError("detection boxes must be finite, got NaN or infinity")
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            raise InputError("detection boxes must have x2 >= x1 and y2 >= y1")

    def _assign(self, detections: Faces) -> None:
        """Match detections to tracks; each unmatched detection starts a track at once."""
        boxes = detections.boxes.astype(float)
        unmatched = set(range(len(detections)))
        if self._tracks and len(detections):
            cost = self._cost(boxes)
            for i, j in zip(*linear_sum_assignment(cost)):
                if cost[i, j] < _NO_MATCH:
                    self._tracks[i].correct(boxes[j], detections.landmarks[j], detections.scores[j])
                    unmatched.discard(j)
        for j in sorted(unmatched):
            self._tracks.append(_Track.start(self._next_id, boxes[j], detections.landmarks[j], detections.scores[j]))
            self._next_id += 1

    def _cost(self, boxes: np.ndarray) -> np.ndarray:
        """Tracks x detections: 1 - IoU for overlaps, 1 + relative distance for the centre gate."""
        predicted = np.array([t.predicted_box() for t in self._tracks])
        iou = iou_matrix(predicted, boxes)
        distance = np.hypot(
            (predicted[:, None, 0] + predicted[:, None, 2] - boxes[None, :, 0] - boxes[None, :, 2]) / 2,
            (predicted[:, None, 1] + predicted[:, None, 3] - boxes[None, :, 1] - boxes[None, :, 3]) / 2,
        )
        radius = np.array([self._gate_radius(t) for t in self._tracks])[:, None]
        cost = np.where(distance <= radius, 1 + distance / radius, _NO_MATCH)
        return np.where(iou >= self.iou_threshold, 1 - iou, cost)

    def _gate_radius(self, track: _Track) -> float:
        return self.centre_gate * track.size() + max(track.margins(self.growth_per_frame, self.speed_growth))

    @staticmethod
    def _entering(track: _Track, box: np.ndarray, width: int, height: int) -> np.ndarray:
        """A coasting box whose last detection was cut by a frame edge, reaching one face size
        further in from that edge. Such a face is entering (or leaving) and its box is only
        the part in view: it grows faster than any velocity fitted to it says (measured on
        the example clip with detection every 3rd frame: a face coming in from the right
        edge was 10 px past its predicted box two frames after a detection)."""
        x1, y1, x2, y2 = track.box
        size = max(x2 - x1, y2 - y1, 1.0)
        box = box.copy()
        if x1 <= 1:
            box[2] += size
        if x2 >= width - 1:
            box[0] -= size
        if y1 <= 1:
            box[3] += size
        if y2 >= height - 1:
            box[1] -= size
        return box

    def _alive(self, track: _Track, width: int, height: int) -> bool:
        """Detected tracks always live; coasting ones until they expire or leave the frame entirely."""
        if track.missed == 0:
            return True
        if track.missed > (self.max_coast_frames if track.confirmed else self.tentative_coast_frames):
            return False
        x1, y1, x2, y2 = track.coasting_box(self.growth_per_frame, self.speed_growth)
        return x2 > 0 and y2 > 0 and x1 < width and y1 < height

    def _output(self, width: int, height: int) -> Faces:
        if not self._tracks:
            return Faces.empty()
        detected = np.array([t.missed == 0 for t in self._tracks])
        boxes = np.array(
            [t.box if t.missed == 0 else self._entering(t, t.coasting_box(self.growth_per_frame, self.speed_growth), width, height)
             for t in self._tracks]
        )
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return Faces(
            boxes=boxes,
            scores=np.array([t.score for t in self._tracks]),
            landmarks=np.array([t.landmarks if t.missed == 0 else t.coasting_landmarks() for t in self._tracks]),
            track_ids=np.array([t.id for t in self._tracks]),
            detected=detected,
        )
