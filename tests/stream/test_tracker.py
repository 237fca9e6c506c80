"""The tracker's fail-closed rules: it may add boxes to mask, never hide a detected face."""

import math

import numpy as np
import pytest

from veil.errors import InputError
from veil.stream.faces import Faces
from veil.stream.tracker import Tracker

W, H = 640, 480


def box_at(x: float, y: float, w: float = 80, h: float = 80) -> np.ndarray:
    return np.array([x, y, x + w, y + h], np.float32)


def contains(outer, inner, tolerance: float = 1e-3) -> bool:
    return bool(
        outer[0] <= inner[0] + tolerance
        and outer[1] <= inner[1] + tolerance
        and outer[2] >= inner[2] - tolerance
        and outer[3] >= inner[3] - tolerance
    )


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def landmarks_in(box) -> np.ndarray:
    """Five plausible landmarks spread over the box."""
    x1, y1, x2, y2 = box
    fractions = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
    return (np.array([x1, y1]) + fractions * np.array([x2 - x1, y2 - y1]))[None].astype(np.float32)


def lose(tracker: Tracker, box, frames: int) -> list[Faces]:
    """Show a still face for a while, then let the detector run and find nothing."""
    for _ in range(frames):
        tracker.update(Faces.from_boxes(box), W, H)
    return [tracker.update(Faces.empty(), W, H) for _ in range(60)]


def test_new_face_is_output_on_its_first_frame():
    tracker = Tracker()
    tracker.update(Faces.from_boxes(box_at(50, 50)), W, H)
    out = tracker.update(Faces.from_boxes([box_at(50, 50), box_at(400, 300)]), W, H)
    new = [i for i in range(len(out)) if np.array_equal(out.boxes[i], box_at(400, 300))]
    assert len(new) == 1
    assert out.detected[new[0]]
    assert out.track_ids[new[0]] >= 0


def test_every_detection_is_in_the_output():
    """Overlapping and even identical detections each get their own output row and id."""
    tracker = Tracker()
    tracker.update(Faces.from_boxes([box_at(100, 100), box_at(300, 100)]), W, H)
    boxes = [box_at(100, 100), box_at(100, 100), box_at(110, 105), box_at(300, 100), box_at(500, 350, 20, 20)]
    out = tracker.update(Faces.from_boxes(boxes), W, H)
    detected = out[out.detected]
    assert len(detected) == len(boxes)
    assert len(set(detected.track_ids.tolist())) == len(boxes)
    assert sorted(map(tuple, detected.boxes.tolist())) == sorted(map(tuple, np.array(boxes).tolist()))


def test_detection_outside_the_frame_is_still_output():
    """Even a box with no pixels left after clipping keeps its row: no detection is dropped."""
    out = Tracker().update(Faces.from_boxes([box_at(-100, 100, 50, 50), box_at(100, 100, 0, 20)]), W, H)
    assert out.detected.tolist() == [True, True]
    assert out.track_ids.tolist() == [0, 1]


def test_detected_face_keeps_its_detection_box_landmarks_and_score():
    """The filtered box may lag or shrink; a detected face is masked with what the detector saw."""
    tracker = Tracker()
    for frame in range(10):
        box = box_at(100 + 7 * frame, 100 + 3 * frame, 80 + frame, 90 - frame)
        landmarks = landmarks_in(box)
        out = tracker.update(Faces.from_boxes(box, scores=[0.5 + frame / 100], landmarks=landmarks), W, H)
        assert len(out) == 1 and out.detected[0]
        np.testing.assert_array_equal(out.boxes[0], box)
        np.testing.assert_array_equal(out.landmarks[0], landmarks[0])
        assert out.scores[0] == np.float32(0.5 + frame / 100)


@pytest.mark.parametrize(("max_coast_s", "fps", "coasting_frames"), [(1.0, 25.0, 25), (0.5, 10.0, 5), (0.0, 30.0, 0)])
def test_lost_track_keeps_masking_then_expires(max_coast_s, fps, coasting_frames):
    tracker = Tracker(max_coast_s=max_coast_s, fps=fps)
    box = box_at(200, 150)
    for _ in range(2):  # seen twice: a confirmed face
        tracker.update(Faces.from_boxes(box, scores=[0.8]), W, H)
    outputs = [tracker.update(Faces.empty(), W, H) for _ in range(coasting_frames + 5)]
    for out in outputs[:coasting_frames]:
        assert len(out) == 1
        assert not out.detected[0]
        assert out.track_ids[0] == 0
        assert out.scores[0] == np.float32(0.8)
        assert contains(out.boxes[0], box)
    assert all(len(out) == 0 for out in outputs[coasting_frames:])


def test_a_face_seen_once_coasts_for_the_shorter_tentative_time():
    tracker = Tracker(max_coast_s=1.0, tentative_coast_s=0.2, fps=25.0)
    tracker.update(Faces.from_boxes(box_at(200, 150)), W, H)
    outputs = [tracker.update(Faces.empty(), W, H) for _ in range(10)]
    assert [len(out) for out in outputs] == [1] * 5 + [0] * 5


def test_coasting_box_growth_is_bounded():
    tracker = Tracker(max_coast_s=10.0)
    for frame in range(5):  # a jittery, fast-looking face
        tracker.update(Faces.from_boxes(box_at(280 + 30 * (frame % 2), 200, 40, 40)), W, H)
    coasting = [tracker.update(None, W, H) for _ in range(40)]
    assert all(len(out) == 1 for out in coasting)
    width = max(out.boxes[0, 2] - out.boxes[0, 0] for out in coasting)
    # at most 1.5x the face for size drift, plus one face size per side
    assert 40 <= width <= 1.5 * 40 + 2 * 1.5 * 40 + 1


def test_coasting_box_grows_with_frames_since_detection():
    outputs = lose(Tracker(max_coast_s=2.0), box_at(200, 150), frames=5)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (out.boxes[0] for out in outputs[:10])]
    assert all(later > earlier for earlier, later in zip(areas, areas[1:]))


def test_coasting_box_grows_with_speed():
    still, moving = Tracker(), Tracker()
    for frame in range(10):
        still.update(Faces.from_boxes(box_at(100, 100)), W, H)
        moving.update(Faces.from_boxes(box_at(100 + 8 * frame, 100)), W, H)
    for _ in range(5):
        still_box = still.update(Faces.empty(), W, H).boxes[0]
        moving_box = moving.update(Faces.empty(), W, H).boxes[0]
    assert moving_box[2] - moving_box[0] > still_box[2] - still_box[0] + 10
    assert moving_box[3] - moving_box[1] > still_box[3] - still_box[1] + 10


@pytest.mark.parametrize(
    ("velocity", "checked_from"),
    [((3.0, 1.5), 0), ((-2.0, 2.0), 0), ((10.0, 4.0), 4), ((-6.0, -12.0), 4)],
    ids=["slow", "slow-diagonal", "fast", "fast-up-left"],
)
def test_prediction_follows_motion_between_detection_frames(velocity, checked_from):
    """Detector every 3rd frame: the boxes in between contain the true face.

    A slow face is covered from its first frame by the growth alone; a fast one once a
    second detection has shown its velocity.
    """
    tracker = Tracker()
    vx, vy = velocity
    for frame in range(60):
        true = box_at(1000 + vx * frame, 1000 + vy * frame, 60, 70)
        out = tracker.update(Faces.from_boxes(true) if frame % 3 == 0 else None, 2000, 2000)
        assert out.track_ids.tolist() == [0]
        assert out.detected[0] == (frame % 3 == 0)
        if frame >= checked_from:
            assert contains(out.boxes[0], true), (frame, out.boxes[0], true)


def test_two_crossing_faces_keep_their_ids():
    """Fast enough that matching on the last boxes would swap them: the prediction keeps them apart."""
    tracker = Tracker()
    rng = np.random.default_rng(0)
    ids = {"a": set(), "b": set()}
    for frame in range(40):
        faces = {"a": box_at(40 + 12 * frame, 200), "b": box_at(560 - 12 * frame, 215, 70, 70)}
        order = rng.permutation(["a", "b"])
        out = tracker.update(Faces.from_boxes([faces[name] for name in order]), W, H)
        for name, box in faces.items():
            (row,) = [i for i in range(len(out)) if out.detected[i] and np.array_equal(out.boxes[i], box)]
            ids[name].add(int(out.track_ids[row]))
    assert len(ids["a"]) == 1 and len(ids["b"]) == 1
    assert ids["a"] != ids["b"]


def test_fast_small_face_keeps_its_id():
    """Boxes that barely overlap from frame to frame still match through the centre gate."""
    tracker = Tracker()
    for frame in range(20):
        out = tracker.update(Faces.from_boxes(box_at(20 + 13 * frame, 100, 16, 16)), W, H)
        assert out[out.detected].track_ids.tolist() == [0]


def test_track_ids_are_unique_and_increasing():
    """Faces come and go; an id is never reused, and each new one is larger than all before."""
    tracker = Tracker(max_coast_s=0.1, fps=25.0)
    seen: set[int] = set()
    for frame in range(40):
        boxes = [box_at(40 + 90 * k, 40 + 60 * (frame % 3), 50, 50) for k in range(6) if (frame + k) % 4]
        out = tracker.update(Faces.from_boxes(boxes), W, H)
        ids = out.track_ids.tolist()
        assert len(set(ids)) == len(ids)
        new = [i for i in ids if i not in seen]
        if seen:
            assert all(i > max(seen) for i in new)
        seen.update(new)
    assert len(seen) > 6


def test_boxes_are_clipped_to_the_frame():
    tracker = Tracker()
    for _ in range(2):
        tracker.update(Faces.from_boxes([box_at(-30, -20), box_at(600, 440)]), W, H)
    for out in [tracker.update(None, W, H) for _ in range(10)]:
        assert len(out) == 2
        assert (out.boxes[:, [0, 2]] >= 0).all() and (out.boxes[:, [0, 2]] <= W).all()
        assert (out.boxes[:, [1, 3]] >= 0).all() and (out.boxes[:, [1, 3]] <= H).all()


def test_track_leaving_the_frame_is_removed_only_when_fully_outside():
    """No growth, so the predicted box is exact: the track lives until its left edge passes W."""
    tracker = Tracker(max_coast_s=100.0, growth_per_frame=0.0, speed_growth=0.0)
    for frame in range(15):
        tracker.update(Faces.from_boxes(box_at(400 + 10 * frame, 200, 60, 60)), W, H)
    left_edges = []
    for _ in range(100):
        out = tracker.update(None, W, H)
        if len(out) == 0:
            break
        left_edges.append(float(out.boxes[0, 0]))
        assert out.boxes[0, 2] <= W
    assert 0 < len(left_edges) < 100
    assert W - 10.5 <= left_edges[-1] < W


def test_coasting_landmarks_move_and_scale_with_the_box():
    """A face moving right and growing: its coasting landmarks follow where it would be."""

    def face(frame: int) -> np.ndarray:
        return box_at(100 + 5 * frame, 100 + 2 * frame, 60 + frame, 60 + frame)

    tracker = Tracker()
    for frame in range(30):
        tracker.update(Faces.from_boxes(face(frame), landmarks=landmarks_in(face(frame))), W, H)
    for frame in range(30, 35):
        coasting = tracker.update(None, W, H)
        np.testing.assert_allclose(coasting.landmarks[0], landmarks_in(face(frame))[0], atol=1.0)
        spread = np.ptp(coasting.landmarks[0], axis=0)
        assert (spread > np.ptp(landmarks_in(face(29))[0], axis=0)).all()


def test_coasting_landmarks_stay_nan_when_the_detector_gives_none():
    tracker = Tracker()
    tracker.update(Faces.from_boxes(box_at(100, 100)), W, H)
    assert np.isnan(tracker.update(None, W, H).landmarks).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fps": 0},
        {"fps": -25.0},
        {"fps": math.nan},
        {"fps": math.inf},
        {"fps": "25"},
        {"max_coast_s": -0.1},
        {"iou_threshold": 0.0},
        {"iou_threshold": 1.5},
        {"growth_per_frame": -0.01},
        {"speed_growth": math.nan},
        {"centre_gate": 0.0},
    ],
)
def test_bad_settings_raise_input_error(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(InputError, match=name):
        Tracker(**kwargs)


@pytest.mark.parametrize(
    ("detections", "width", "height", "message"),
    [
        (Faces.from_boxes([[10, 10, 5, 50]]), W, H, "x2 >= x1"),
        (Faces.from_boxes([[10, np.nan, 50, 50]]), W, H, "finite"),
        (np.array([[10, 10, 50, 50]]), W, H, "Faces or None"),
        (None, 0, H, "width"),
        (None, W, 480.0, "height"),
    ],
)
def test_bad_update_raises_input_error_and_leaves_the_tracker_usable(detections, width, height, message):
    tracker = Tracker()
    tracker.update(Faces.from_boxes(box_at(100, 100)), W, H)
    with pytest.raises(InputError, match=message):
        tracker.update(detections, width, height)
    out = tracker.update(Faces.from_boxes(box_at(102, 101)), W, H)
    assert out.track_ids.tolist() == [0]


def random_frames(seed: int, count: int = 150):
    """Random faces per frame, some of them partly outside, with random detector gaps."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        if rng.random() < 0.3:
            yield None
            continue
        n = int(rng.integers(0, 7))
        size = rng.uniform(4, 200, (n, 2))
        corner = rng.uniform(-size + 1, [W - 1, H - 1], (n, 2))
        yield Faces.from_boxes(np.concatenate([corner, corner + size], axis=1), scores=rng.uniform(0, 1, n))


@pytest.mark.parametrize("seed", range(10))
def test_random_detections_are_always_covered(seed):
    tracker = Tracker(fps=30.0, max_coast_s=0.5)
    for detections in random_frames(seed):
        out = tracker.update(detections, W, H)
        assert len(set(out.track_ids.tolist())) == len(out)
        if detections is None:
            assert not out.detected.any()
            continue
        assert out.detected.sum() == len(detections)
        for box in detections.clipped(W, H).boxes:
            assert any(contains(o, box) and iou(o, box) >= 0.99 for o in out.boxes), box


def test_same_inputs_give_same_outputs():
    first, second = Tracker(), Tracker()
    for detections in random_frames(seed=7):
        a, b = first.update(detections, W, H), second.update(detections, W, H)
        for field in Faces.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_a_lost_face_cut_by_the_frame_edge_is_masked_a_face_size_further_in():
    """An entering face's box is only its visible part, and it grows faster than any fitted
    velocity: between detections its mask reaches one face size in from the edge."""
    tracker = Tracker()
    cut = np.array([W - 12, 200, W, 230], np.float32)  # 12 px of a 30 px face, at the right edge
    tracker.update(Faces.from_boxes(cut), W, H)
    (coasting,) = tracker.update(None, W, H).boxes
    assert coasting[0] <= W - 12 - 30 and coasting[2] == W
    inside = np.array([300, 200, 330, 230], np.float32)  # the same face wholly in view
    tracker = Tracker()
    tracker.update(Faces.from_boxes(inside), W, H)
    (coasting,) = tracker.update(None, W, H).boxes
    assert coasting[0] > 300 - 30 / 2, "a face in view is not grown by the edge rule"
