"""Backfill: a face is masked in the frames just before its first detection."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.fakes import ListSink
from veil.errors import StageError
from veil.stream.anonymisers.classic import cover_whole_frame
from veil.stream.elements import Stage
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.graph import Graph
from veil.stream.stages.backfill import BackfillStage


def frame(index, tracks=None):
    return Frame(image=np.zeros((100, 200, 3), np.uint8), pts=index, time_base=Fraction(1, 25), index=index, tracks=tracks)


def track(track_id, box):
    return Faces.from_boxes([box], track_ids=[track_id])


def test_a_new_face_is_added_to_the_frames_held_before_it():
    stage = BackfillStage(frames=3)
    out = []
    for i in range(3):
        out += stage.process(frame(i, Faces.empty()))
    out += stage.process(frame(3, track(0, [50, 20, 70, 40])))
    out += stage.flush()
    assert [f.index for f in out] == [0, 1, 2, 3]
    assert len(out[0].tracks) == 1 and len(out[1].tracks) == 1 and len(out[2].tracks) == 1
    # Further back, the box is grown more: the face may have moved further.
    widths = [f.tracks.boxes[0, 2] - f.tracks.boxes[0, 0] for f in out[:3]]
    assert widths[0] > widths[1] > widths[2] > 20
    assert not out[0].tracks.detected[0] and out[3].tracks.detected[0]


def test_a_known_face_is_not_added_again():
    stage = BackfillStage(frames=2)
    out = []
    for i in range(6):
        out += stage.process(frame(i, track(7, [10, 10, 30, 30])))
    out += stage.flush()
    assert [len(f.tracks) for f in out] == [1] * 6


def test_zero_frames_releases_each_frame_at_once():
    stage = BackfillStage(frames=0)
    assert [f.index for f in stage.process(frame(0, track(0, [0, 0, 10, 10])))] == [0]


class RaiseAt(Stage):
    name = "boom"

    def process(self, f):
        if f.index == 4:
            raise RuntimeError("detector exploded")
        return f.replace(tracks=Faces.empty())



def test_frames_stay_in_order_through_a_holding_stage_when_a_frame_fails():
    sink = ListSink()
    with pytest.raises(StageError):
        Graph((frame(i) for i in range(30)), [RaiseAt(), BackfillStage(frames=3)], sink, cover=cover_whole_frame).run()
    indices = [f.index for f in sink.frames]
    assert indices == sorted(indices) and 4 in indices
