"""Keyframes and propagation: the generator runs on keyframes only, each face's generated
crop follows the original face between them, and no face is ever shown raw while its
generated face is on its way."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import cv2
import numpy as np
import pytest

from tests.stream.test_synth import SECRET, face_interior, outside_blend_region, photo, with_tracks
from veil.engines import align
from veil.engines.batching import BatchingEngine
from veil.errors import InputError
from veil.stream.anonymisers import stream_anonymiser
from veil.stream.anonymisers.propagate import DIS_PRESET, FLOW_LIMIT, NOSE_SHIFT, PropagatingSynth
from veil.stream.anonymisers.synth import SynthAnonymiser, warp_crop
from veil.stream.faces import Faces
from veil.stream.options import Options


class TextureEngine:
    """A stand-in generator: a smooth random texture per latent code; fast, and easy to
    follow when it moves."""

    input_names, output_names = ("image", "latent"), ("face",)

    def __init__(self):
        self.calls: list[int] = []  # faces per call

    def run(self, inputs: dict) -> list:
        self.calls.append(len(inputs["image"]))
        faces = []
        for code in inputs["latent"]:
            rng = np.random.default_rng(np.frombuffer(code.tobytes(), np.uint32))
            small = rng.uniform(-1, 1, (12, 12, 3)).astype(np.float32)
            faces.append(cv2.resize(small, (align.SIZE, align.SIZE), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1))
        return [np.stack(faces)]


class HeldEngine(TextureEngine):
    """Answers only when the test lets it: a generator that is slower than the stream."""

    def __init__(self):
        super().__init__()
        self.held: list[tuple[dict, Future]] = []

    def submit(self, inputs: dict) -> Future:
        done: Future = Future()
        self.held.append((inputs, done))
        return done

    def release(self) -> None:
        for inputs, done in self.held:
            done.set_result(self.run(inputs))
        self.held = []


class FailingEngine(HeldEngine):
    def release(self) -> None:
        for _, done in self.held:
            done.set_exception(RuntimeError("generator exploded"))
        self.held = []


@pytest.fixture(scope="module")
def face(yunet) -> tuple[np.ndarray, Faces]:
    """The astronaut with room around her to move."""
    image = cv2.copyMakeBorder(photo("astronaut")[:300, 60:400], 40, 40, 40, 40, cv2.BORDER_REFLECT)
    faces = yunet.detect(image)
    assert len(faces) == 1
    return image, with_tracks(faces, [5])


def moved(image: np.ndarray, faces: Faces, dx: float, dy: float = 0.0) -> tuple[np.ndarray, Faces]:
    """The frame and its face shifted by (dx, dy) pixels: a head moving across the frame."""
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    shifted = cv2.warpAffine(image, shift, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)
    offset = np.float32([dx, dy])
    return shifted, Faces(faces.boxes + np.tile(offset, 2), faces.scores, faces.landmarks + offset, faces.track_ids, faces.detected)


def canonical(image: np.ndarray, faces: Faces) -> np.ndarray:
    return align.crop(image, align.similarity(faces.landmarks[0])).astype(np.float32)


def test_the_generator_runs_on_keyframes_only(face):
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=4)
    for t in range(10):
        propagator.apply(*moved(*face, dx=t))
    assert engine.calls == [1, 1, 1]  # frames 0, 4 and 8
    assert (propagator.keyframes, propagator.warped) == (3, 7)


def test_one_keyframe_per_frame_is_synth_on_every_frame(face):
    engine = TextureEngine()
    synth = SynthAnonymiser(engine, secret=SECRET)
    propagator = PropagatingSynth(synth, every=1)
    for t in range(3):
        frame = moved(*face, dx=2 * t)
        np.testing.assert_array_equal(propagator.apply(*frame), synth.apply(*frame))
    assert engine.calls == [1, 1, 1, 1, 1, 1]


def test_the_generated_face_moves_with_the_head(face):
    """Warped from frame 0, the face on frame 5 is where a fresh generation would put it."""
    engine = TextureEngine()
    synth = SynthAnonymiser(engine, secret=SECRET)
    propagator = PropagatingSynth(synth, every=100)
    for t in range(6):
        image, faces = moved(*face, dx=3 * t, dy=t)
        out = propagator.apply(image, faces)
    assert engine.calls == [1]
    fresh = synth.apply(image, faces)
    inside = face_interior(faces.boxes[0])
    error = np.abs(out[inside].astype(float) - fresh[inside]).mean()
    left_behind = np.abs(out[inside].astype(float) - synth.apply(*face)[inside]).mean()
    assert error < 4 and left_behind > 5 * error, (error, left_behind)


def test_motion_the_landmarks_miss_is_followed_by_the_flow():
    """A mouth opening moves pixels inside the crop while eyes and nose stay: the warp
    moves the generated crop the same way."""
    rng = np.random.default_rng(0)
    original = cv2.GaussianBlur(rng.uniform(0, 255, (align.SIZE, align.SIZE)).astype(np.float32), (0, 0), 3)
    generated = cv2.GaussianBlur(rng.uniform(0, 255, (align.SIZE, align.SIZE, 3)).astype(np.float32), (0, 0), 3)
    lower = np.s_[70:118, 30:98]
    opened, expected = original.copy(), generated.copy()
    opened[72:120, 30:98] = original[lower]  # the lower face moves down by 2 pixels
    expected[72:120, 30:98] = generated[lower]
    flow = cv2.DISOpticalFlow_create(DIS_PRESET).calc(opened.astype(np.uint8), original.astype(np.uint8), None)
    warped = warp_crop(generated, flow)
    check = np.s_[80:110, 40:88]
    assert np.abs(warped[check] - expected[check]).mean() < 0.5 * np.abs(generated[check] - expected[check]).mean()


def test_a_new_face_is_pixelated_until_its_generated_face_arrives(face):
    engine = HeldEngine()
    synth = SynthAnonymiser(engine, secret=SECRET)
    propagator = PropagatingSynth(synth, every=8, wait=False)
    image, faces = face
    first = propagator.apply(image, faces)
    np.testing.assert_array_equal(first, synth.cover(image, faces, [0]))  # the fallback, never raw
    second = propagator.apply(*moved(image, faces, 1))
    np.testing.assert_array_equal(second, synth.cover(*moved(image, faces, 1), [0]))
    engine.release()
    third_frame = moved(image, faces, 2)
    third = propagator.apply(*third_frame)
    assert not np.array_equal(third, synth.cover(*third_frame, [0]))
    assert len(engine.calls) == 1 and propagator.warped == 1


def test_the_previous_keyframe_keeps_being_warped_while_the_next_is_generated(face):
    engine = HeldEngine()
    synth = SynthAnonymiser(engine, secret=SECRET)
    propagator = PropagatingSynth(synth, every=2, wait=False)
    propagator.apply(*face)
    engine.release()
    outputs = []
    for t in range(1, 6):
        frame = moved(*face, dx=t)
        outputs.append((frame, propagator.apply(*frame)))
    assert len(engine.held) == 1, "one keyframe in flight per track, not one per frame"
    for (image, faces), out in outputs:
        inside = face_interior(faces.boxes[0])
        assert np.abs(out[inside].astype(float) - synth.cover(image, faces, [0])[inside]).mean() > 10, "the warp, not the fallback"
    assert propagator.warped == 5


def test_an_occlusion_forces_a_new_keyframe(face):
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=100)
    image, faces = face
    propagator.apply(image, faces)
    propagator.apply(image, faces)
    assert engine.calls == [1]
    covered = image.copy()
    x1, y1, x2, y2 = faces.boxes[0].astype(int)
    covered[(y1 + y2) // 2 : y2, x1:x2] = (40, 200, 40)  # a hand over the lower face
    propagator.apply(covered, faces)
    assert engine.calls == [1, 1]


@pytest.mark.parametrize("change", ["turn", "zoom"])
def test_a_large_pose_or_scale_change_forces_a_new_keyframe(face, change):
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=100, residual=1e9)
    image, faces = face
    propagator.apply(image, faces)
    landmarks = faces.landmarks.copy()
    if change == "turn":
        frame_px = 1 / np.hypot(*align.similarity(landmarks[0])[0, :2])
        landmarks[0, 2, 0] += 1.5 * NOSE_SHIFT * frame_px  # the nose swings sideways
    else:
        center = landmarks[0].mean(0)
        landmarks[0] = center + (landmarks[0] - center) * 1.6
    propagator.apply(image, Faces(faces.boxes, faces.scores, landmarks, faces.track_ids, faces.detected))
    assert engine.calls == [1, 1]


def test_a_flow_that_moves_the_face_far_forces_a_new_keyframe(face):
    """The head moves but its landmarks do not (they erred on one frame or the other): a
    small miss is warped away, a large one is regenerated rather than dragged along."""
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=100, residual=1e9)
    image, faces = face
    frame_px = 1 / np.hypot(*align.similarity(faces.landmarks[0])[0, :2])
    propagator.apply(image, faces)
    shifted, _ = moved(image, faces, 0.4 * FLOW_LIMIT * frame_px)
    propagator.apply(shifted, faces)
    assert engine.calls == [1]
    shifted, _ = moved(image, faces, 2 * FLOW_LIMIT * frame_px)
    propagator.apply(shifted, faces)
    assert engine.calls == [1, 1]


def test_a_scene_cut_forces_a_new_keyframe(face):
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=100)
    image, faces = face
    propagator.apply(image, faces)
    cut = 255 - image  # another scene ...
    x1, y1, x2, y2 = (faces.boxes[0] + [-30, -30, 30, 30]).astype(int)
    cut[y1:y2, x1:x2] = image[y1:y2, x1:x2]  # ... in which the same face sits in the same place
    propagator.apply(cut, faces)
    assert engine.calls == [1, 1]


def test_a_returning_track_gets_a_fresh_keyframe(face):
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=100)
    image, faces = face
    propagator.apply(image, faces)
    propagator.apply(image, Faces.empty())
    propagator.apply(image, faces)
    assert engine.calls == [1, 1]


def test_a_face_pixelated_for_a_frame_keeps_its_keyframe(face):
    """A coasting box the generated region cannot cover is pixelated for that frame; its
    track is still there, so it must not cost a new keyframe when it is usable again."""
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=100)
    image, faces = face
    propagator.apply(image, faces)
    unusable = Faces(faces.boxes, faces.scores, np.full_like(faces.landmarks, np.nan), faces.track_ids, faces.detected)
    pixelated = propagator.apply(image, unusable)
    assert np.array_equal(pixelated, propagator.synth.fallback.apply(image, unusable))
    propagator.apply(image, faces)
    assert engine.calls == [1]


def test_untracked_faces_are_never_carried_to_another_frame(face):
    engine = TextureEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=100)
    image, faces = face
    untracked = with_tracks(faces, [-1])
    propagator.apply(image, untracked)
    propagator.apply(image, untracked)
    assert engine.calls == [1, 1]


def test_pixels_away_from_faces_are_unchanged_bit_for_bit(face):
    propagator = PropagatingSynth(SynthAnonymiser(TextureEngine(), secret=SECRET), every=4)
    for t in range(3):
        image, faces = moved(*face, dx=t)
        out = propagator.apply(image, faces)
        outside = outside_blend_region(faces, image.shape)
        np.testing.assert_array_equal(out[outside], image[outside])


def test_file_runs_wait_for_each_keyframe_so_the_output_never_depends_on_timing(face):
    """With the generator on another thread (as ``veil run`` has it), the output equals
    a run where every call returns at once."""
    direct = PropagatingSynth(SynthAnonymiser(TextureEngine(), secret=SECRET), every=3)
    slow = TextureEngine()
    slow_run = slow.run
    gate = threading.Event()

    def late(inputs):
        gate.wait(0.05)  # always later than the stage would like
        return slow_run(inputs)

    slow.run = late
    threaded = PropagatingSynth(SynthAnonymiser(BatchingEngine(slow), secret=SECRET), every=3)
    for t in range(7):
        frame = moved(*face, dx=2 * t)
        np.testing.assert_array_equal(threaded.apply(*frame), direct.apply(*frame))


@pytest.mark.parametrize("wait", [True, False], ids=["file", "live"])
def test_a_generator_error_fails_the_frame_instead_of_showing_the_face(face, wait):
    engine = FailingEngine()
    propagator = PropagatingSynth(SynthAnonymiser(engine, secret=SECRET), every=4, wait=wait)
    if wait:
        engine.submit = lambda inputs: _failed(RuntimeError("generator exploded"))
        with pytest.raises(RuntimeError, match="exploded"):
            propagator.apply(*face)
        return
    propagator.apply(*face)  # pixelated while the generator works
    engine.release()
    with pytest.raises(RuntimeError, match="exploded"):
        propagator.apply(*face)


def _failed(error: Exception) -> Future:
    done: Future = Future()
    done.set_exception(error)
    return done


def test_each_stream_gets_its_own_propagator_and_live_ones_never_wait():
    options = Options(mode="synth", secret="s")
    options._anonymiser = SynthAnonymiser(TextureEngine(), secret=SECRET)
    first, second = stream_anonymiser(options), stream_anonymiser(options, live=True)
    assert isinstance(first, PropagatingSynth) and first is not second
    assert first.synth is second.synth, "one generator shared by the run's streams"
    assert first.wait and not second.wait
    options.keyframe_every = 1
    assert stream_anonymiser(options) is options.anonymiser()


def test_a_keyframe_interval_below_one_is_an_input_error():
    with pytest.raises(InputError, match="keyframe interval must be a whole number from 1 to"):
        Options(mode="synth", keyframe_every=0)


class RecordedFlows(PropagatingSynth):
    """The real propagator, keeping every flow it measures."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flows: list[np.ndarray] = []

    def _flow(self, grey, reference):
        flow = super()._flow(grey, reference)
        self.flows.append(flow)
        return flow


@pytest.mark.parametrize("hidden", ["noise", "the face moved 2 px", "the face brightened", "another face"])
def test_between_keyframes_the_hidden_face_reaches_the_output_only_as_a_bounded_flow(face, hidden):
    """The README's guarantee for propagation: change the pixels inside the face's mask on a
    frame between keyframes, and the output either is that frame's own synth (regenerated:
    the generator never sees those pixels) or is exactly the keyframe's generated face
    moved by a flow of at most FLOW_MAX crop pixels anywhere and FLOW_LIMIT on average;
    and nothing outside the face changes."""
    from tests.stream.test_synth import deep_inside_face_mask
    from veil.stream.anonymisers.propagate import FLOW_MAX, displacement

    synth = SynthAnonymiser(TextureEngine(), secret=SECRET)
    image, faces = moved(*face, dx=3, dy=1)
    inside = deep_inside_face_mask(align.similarity(faces.landmarks[0]), image.shape)
    changed = image.copy()
    if hidden == "noise":
        changed[inside] = np.random.default_rng(0).integers(0, 256, (inside.sum(), 3), dtype=np.uint8)
    elif hidden == "the face moved 2 px":
        changed[inside] = moved(image, faces, dx=2)[0][inside]
    elif hidden == "the face brightened":
        changed[inside] = np.clip(image[inside].astype(int) + 10, 0, 255).astype(np.uint8)
    else:
        ys, xs = np.nonzero(inside)
        changed[inside] = cv2.resize(photo("camera")[90:220, 190:280], (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))[ys - ys.min(), xs - xs.min()]
    outputs = []
    for frame in (image, changed):
        propagator = RecordedFlows(synth, every=100)
        propagator.apply(*face)  # the keyframe
        out = propagator.apply(frame, faces)
        outputs.append(out)
    regenerated = propagator.keyframes == 2
    if regenerated:
        np.testing.assert_array_equal(out, synth.apply(changed, faces))
    else:
        (flow,) = propagator.flows[-1:]
        assert np.hypot(flow[..., 0], flow[..., 1]).max() <= FLOW_MAX + 1e-4 and displacement(flow) <= FLOW_LIMIT
        key = propagator._tracks[5].current
        (aligned,), _ = synth.align(changed, faces)
        np.testing.assert_array_equal(out, synth.composite(changed, [(key.face, flow, aligned)]))
    outside = outside_blend_region(faces, image.shape)
    np.testing.assert_array_equal(outputs[0][outside], outputs[1][outside])
    # the two branches must both be exercised across the parametrisation: noise always regenerates
    assert regenerated == (hidden in ("noise", "another face")), f"{hidden}: regenerated {regenerated}"
