"""Selective anonymisation, decided per track and failing closed both ways.

keep (``--keep``): a track is shown only after it matched one reference person confidently
on ``confirm`` judged frames in a row; it is masked again on any frame where it cannot be
judged (too small, turned away, blurred, overlapping another face, not detected: a tracker
prediction or a re-association) or jumps, and must then confirm afresh; shown tracks are
re-checked every ``recheck`` frames. Everyone else is masked.

only (``--only``): a track is masked from the first frame it matches a reference even
weakly, and for the rest of the track; in file runs also on the ``hold`` frames before
(held back for that). Everyone else is shown. A missed match shows that person.

The recogniser runs on tracked faces only, in one batch a frame, and only where a decision
needs it: faces being confirmed, shown faces due a re-check, and the others every
``recheck`` frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from veil.errors import InputError
from veil.stream.elements import Stage
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.identify.people import People
from veil.stream.identify.recogniser import Recogniser

POLICIES = ("keep", "only")
KEEP_THRESHOLD = 0.45  # SFace cosine; chosen from benchmarks/SELECTIVE.md
ONLY_THRESHOLD = 0.30
CONFIRM_FRAMES = 3
ENROL_FRAMES = 5
RECHECK_FRAMES = 10
JUMP = 0.5  # a centre moving more than this many box sizes in a frame may be another person


@dataclass
class _Track:
    person: str | None = None  # whom it is matching (keep: being confirmed or shown; only: matched)
    streak: int = 0  # judged frames in a row matching ``person``
    score: float = 0.0  # the last score that decided
    stranger: bool = False  # its last check matched nobody: checked every ``recheck`` frames only
    since_check: int = 0
    centre: np.ndarray | None = None
    size: float = 0.0


class SelectStage(Stage):
    """Splits each frame's tracks into those to mask (``tracks``) and those shown (``kept``),
    with a reason for each by track id (``decisions``, for the audit log)."""

    name = "select"

    def __init__(self, policy: str, people, *, recogniser: Recogniser | None = None, threshold: float | None = None, hold: int = 0,
                 confirm: int = CONFIRM_FRAMES, recheck: int = RECHECK_FRAMES):  # fmt: skip
        """``people``: veil.stream.identify.references.People, or None: nobody yet (keep masks
        everyone; ``enrol`` adds the face in front of the camera, with ``recogniser``).
        ``hold``: frames held back (only)."""
        if policy not in POLICIES:
            raise InputError(f"selection {policy!r}: expected keep or only")
        self.policy, self.people = policy, people
        self.recogniser = people.recogniser if people is not None else recogniser
        self.threshold = threshold if threshold is not None else (KEEP_THRESHOLD if policy == "keep" else ONLY_THRESHOLD)
        self.hold, self.confirm, self.recheck = hold if policy == "only" else 0, confirm, recheck
        self.tracks: dict[int, _Track] = {}
        self.held: deque[Frame] = deque()
        self._enrolling: tuple[int, list] | None = None  # (frames wanted, embeddings so far)
        self._decided_with = people  # the people the tracks' states were matched against

    def enrol(self, frames: int = ENROL_FRAMES) -> None:
        """Keep the face in front of the camera (the largest one that can be judged), as
        seen on the next ``frames`` frames where it can; any thread."""
        self._enrolling = (frames, [])

    def forget(self) -> None:
        """Keep nobody again; any thread."""
        self._enrolling, self.people = None, None

    @property
    def enrolling(self) -> bool:
        return self._enrolling is not None

    def process(self, frame: Frame) -> list[Frame]:
        faces = frame.faces_to_mask
        if faces is None:
            raise RuntimeError(f"frame {frame.index} reached select with no detections or tracks")
        if frame.layout != "bgr" or frame.place != "host":
            raise RuntimeError("select needs the frame on the host in BGR")  # the frame is then covered whole
        if self._enrolling is not None:
            self._enrol_from(frame.image, faces)
        masked, reasons = self._decide(frame.image, faces)
        alive = set(faces.track_ids.tolist())
        self.tracks = {track: state for track, state in self.tracks.items() if track in alive}
        decisions = {int(track): reason for track, reason in zip(faces.track_ids, reasons)}
        decided = frame.replace(tracks=faces[masked], kept=faces[~masked], decisions=decisions)
        if self.policy == "only":
            self._mask_held()
        self.held.append(decided)
        released = []
        while len(self.held) > self.hold:
            released.append(self.held.popleft())
        return released

    def flush(self) -> list[Frame]:
        released = list(self.held)
        self.held.clear()
        return released

    def _enrol_from(self, image: np.ndarray, faces: Faces) -> None:
        wanted, found = self._enrolling
        by_size = np.argsort(-(faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1]))
        if len(faces):
            crop = self.recogniser.crop(image, faces.landmarks[by_size[0]])
            if self.recogniser.judgeable(faces, int(by_size[0]), crop) is None:
                found.append(self.recogniser.embed([crop])[0])
        if len(found) >= wanted:
            self._enrolling, self.people = None, People(["you"], [np.stack(found)], self.recogniser)

    def _decide(self, image: np.ndarray, faces: Faces) -> tuple[np.ndarray, list[str]]:
        n, people = len(faces), self.people  # (another thread may enrol or forget meanwhile)
        if people is not self._decided_with:  # enrolled or forgotten: no track is confirmed any more
            self.tracks, self._decided_with = {}, people
        if people is None:
            keep = self.policy == "keep"
            return np.full(n, keep), ["masked: nobody is kept" if keep else "shown: nobody is hidden"] * n
        crops = [self.recogniser.crop(image, faces.landmarks[i]) for i in range(n)]
        states = [self.tracks.setdefault(int(faces.track_ids[i]), _Track()) for i in range(n)]
        why_not = [self._why_not(faces, i, crops[i], states[i]) for i in range(n)]
        due = [i for i in range(n) if self._due(states[i], why_not[i], faces.detected[i] and crops[i] is not None)]
        scores = dict(zip(due, (people.best(e) for e in self.recogniser.embed([crops[i] for i in due]))))
        masked, reasons = np.ones(n, bool), []
        for i in range(n):
            states[i].since_check = 0 if i in scores else states[i].since_check + 1
            decide = self._keep if self.policy == "keep" else self._only
            masked[i], reason = decide(states[i], why_not[i], scores.get(i))
            reasons.append(reason)
        return masked, reasons

    def _why_not(self, faces: Faces, i: int, crop, state: _Track) -> str | None:
        box = faces.boxes[i]
        centre, size = (box[:2] + box[2:]) / 2, float(max(box[2] - box[0], box[3] - box[1]))
        jumped = state.centre is not None and float(np.linalg.norm(centre - state.centre)) > JUMP * max(size, state.size)
        state.centre, state.size = centre, size
        return "jumped (maybe another person)" if jumped else self.recogniser.judgeable(faces, i, crop)

    def _due(self, state: _Track, why_not: str | None, seen: bool) -> bool:
        """keep: judged faces being confirmed, shown ones due a re-check, strangers now and
        then; only: any face seen on this frame (recall first), strangers now and then."""
        if self.policy == "keep" and why_not is not None:
            return False
        if self.policy == "only" and (not seen or state.person is not None):
            return False
        if state.person is not None and state.streak < self.confirm:
            return True
        if state.person is not None or state.stranger:
            return state.since_check + 1 >= self.recheck
        return True

    def _keep(self, state: _Track, why_not: str | None, found) -> tuple[bool, str]:
        if why_not is not None:
            state.person, state.streak = None, 0
            return True, f"masked: not confident ({why_not})"
        if found is not None:
            person, state.score = found
            if state.score >= self.threshold and state.person in (None, person):
                state.person, state.streak, state.stranger = person, state.streak + 1, False
            else:
                state.person, state.streak, state.stranger = None, 0, True
                return True, f"masked: no confident match (best {person} {state.score:.2f})"
        if state.person is not None and state.streak >= self.confirm:
            return False, f"kept: matched {state.person} ({state.score:.2f})"
        if state.person is None:
            return True, "masked: no confident match" + ("" if state.stranger else " yet")
        return True, f"masked: confirming {state.person} ({state.streak}/{self.confirm})"

    def _only(self, state: _Track, why_not: str | None, found) -> tuple[bool, str]:
        if found is not None:
            person, score = found
            if score >= self.threshold:
                state.person, state.score = person, score
            else:
                state.stranger, state.score = True, score
        if state.person is not None:
            return True, f"masked: matched {state.person} ({state.score:.2f})"
        if found is not None:
            return False, f"shown: no match (best {found[0]} {found[1]:.2f})"
        if state.stranger:
            return False, f"shown: no match at its last check ({state.score:.2f})"
        return False, "shown: not checked yet" + (f" ({why_not})" if why_not else "")

    def _mask_held(self) -> None:
        """Tracks that matched are masked on the frames held back before their match too."""
        matched = [track for track, state in self.tracks.items() if state.person is not None]
        for age, held in enumerate(self.held):
            moving = np.isin(held.kept.track_ids, matched)
            if moving.any():
                later = {int(track): "masked: matched later in its track" for track in held.kept.track_ids[moving]}
                self.held[age] = held.replace(tracks=Faces.concat([held.tracks, held.kept[moving]]), kept=held.kept[~moving],
                                              decisions={**held.decisions, **later})  # fmt: skip
