"""Selective anonymisation on real faces: --keep shows the kept person and the privacy gate
finds nobody else on any frame, even while the kept person walks past a bystander;
--only hides the chosen person on every frame; every face's decision is in the audit log;
a bad reference is one line and exit 2 before any output exists."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data

from tests.conftest import shared_data
from veil.cli import main
from veil.stream.jobs import run
from veil.stream.options import Options
from veil.testing.gallery import CELL, cell_of, decoded, heads, make_crossing, make_grid, write


def clip(name: str):
    return shared_data("video", f"talking_head_{name}.mp4")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A 2x2 call gallery of four people (d3 top left is the chosen one), 2 s, and a
    reference photo of d3 from 8 s later in the same clip."""
    folder = tmp_path_factory.mktemp("grid")
    make_grid(folder / "grid.mp4", [clip(name) for name in ("d3", "d10", "d13", "d0")], seconds=2.0)
    cv2.imwrite(str(folder / "d3.jpg"), heads(clip("d3"), 10.0, 1)[0])
    return folder


def faces_by_cell(images, gate) -> list[set[int]]:
    return [{cell_of(box) for box in gate.detect(image)} for image in images]


def test_keep_shows_the_kept_person_and_the_gate_finds_nobody_else_on_any_frame(grid, gate, tmp_path):
    out, audit = tmp_path / "keep.mp4", tmp_path / "keep.jsonl"
    run(str(grid / "grid.mp4"), str(out), Options(progress=False, keep=(str(grid / "d3.jpg"),), audit=str(audit)), log=lambda line: None)
    before, after = faces_by_cell(decoded(grid / "grid.mp4"), gate), faces_by_cell(decoded(out), gate)
    assert all(cells <= {0} for cells in after), [i for i, cells in enumerate(after) if cells - {0}][:10]  # nobody else, ever
    seen = [i for i, cells in enumerate(before) if 0 in cells]
    shown = sum(0 in after[i] for i in seen)
    assert shown >= 0.8 * len(seen), f"the kept person is visible on {shown} of {len(seen)} frames"
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert all(face["decision"].startswith("masked") for line in lines for face in line["faces"])
    kept = [face for line in lines for face in line["kept"]]
    assert kept and all(face["decision"].startswith("kept: matched d3") for face in kept)
    assert {cell_of(face["box"]) for face in kept} == {0}


def test_only_hides_the_chosen_person_on_every_frame_and_shows_the_rest(grid, gate, tmp_path):
    out = tmp_path / "only.mp4"
    run(str(grid / "grid.mp4"), str(out), Options(progress=False, only=(str(grid / "d3.jpg"),)), log=lambda line: None)
    after = faces_by_cell(decoded(out), gate)
    assert not [i for i, cells in enumerate(after) if 0 in cells]  # from the very first frame
    others = sum(len(cells - {0}) for cells in after)
    assert others >= 0.8 * sum(len(cells - {0}) for cells in faces_by_cell(decoded(grid / "grid.mp4"), gate))


def test_a_bystander_the_kept_person_walks_past_never_appears(grid, gate, tmp_path):
    """d3 (kept) crosses in front of d10 and out again; d10 must be hidden on every frame."""
    lefts = make_crossing(tmp_path / "cross.mp4", clip("d3"), clip("d10"), seconds=3.0)
    out = tmp_path / "cross_out.mp4"
    run(str(tmp_path / "cross.mp4"), str(out), Options(progress=False, keep=(str(grid / "d3.jpg"),)), log=lambda line: None)
    leaks = []
    for index, (image, left) in enumerate(zip(decoded(out), lefts)):
        for box in gate.detect(image):
            if not left <= (box[0] + box[2]) / 2 < left + CELL:  # a face outside the kept person's square is the bystander's
                leaks.append(index)
    assert leaks == []


def test_a_bad_reference_is_one_line_and_exit_2_before_any_output(tmp_path, capsys):
    video = tmp_path / "in.mp4"
    write(video, [np.full((64, 64, 3), 128, np.uint8)] * 3)
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "two.jpg"), np.hstack([astronaut, astronaut]))
    cv2.imwrite(str(tmp_path / "blank.jpg"), np.full((200, 200, 3), 200, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    cases = {
        "two.jpg": "2 faces of about the same size; crop it to the one person",
        "blank.jpg": "no face found in it",
        "broken.jpg": "cannot read it as an image",
        "nothere.jpg": "no such photo or folder",
    }
    for name, message in cases.items():
        assert main(["run", str(video), "-o", str(tmp_path / "out.mp4"), "-q", "--keep", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err.splitlines()[-1], err
        assert not list(tmp_path.glob("out*"))
    assert main(["run", str(video), "-o", str(tmp_path / "out.mp4"), "--keep", str(tmp_path / "two.jpg"), "--only", str(tmp_path / "two.jpg")]) == 2
    assert "--keep and --only do not go together" in capsys.readouterr().err


def test_of_several_faces_the_clearly_largest_is_taken_and_said(tmp_path, capsys):
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    small = cv2.resize(astronaut, (170, 170), interpolation=cv2.INTER_AREA)
    photo = astronaut.copy()
    photo[-170:, -170:] = small
    cv2.imwrite(str(tmp_path / "group.jpg"), photo)
    options = Options(progress=False, keep=(str(tmp_path / "group.jpg"),))
    people = options.people()
    assert people.names == ["group"] and people.embeddings[0].shape == (1, 128)
    assert "2 faces, took the largest" in capsys.readouterr().err


def test_a_photo_keeps_the_kept_person_and_hides_the_other(gate, tmp_path):
    people = sorted(p for p in shared_data("identities", "glint24").iterdir() if p.is_dir())[:2]
    photos = [sorted(person.iterdir()) for person in people]
    faces = [cv2.copyMakeBorder(cv2.resize(cv2.imread(str(photo[0])), (224, 224)), 60, 60, 60, 60, cv2.BORDER_REPLICATE) for photo in photos]
    cv2.imwrite(str(tmp_path / "two.png"), np.hstack(faces))
    cv2.imwrite(str(tmp_path / "ref.png"), cv2.resize(cv2.imread(str(photos[0][1])), (224, 224)))
    out, audit = tmp_path / "out.png", tmp_path / "audit.jsonl"
    run(str(tmp_path / "two.png"), str(out), Options(progress=False, keep=(str(tmp_path / "ref.png"),), audit=str(audit)), log=lambda line: None)
    found = gate.detect(cv2.imread(str(out)))
    width = faces[0].shape[1]
    assert [box for box in found if (box[0] + box[2]) / 2 >= width] == []  # the other person is hidden
    assert [box for box in found if (box[0] + box[2]) / 2 < width]  # the kept one is not
    (line,) = [json.loads(text) for text in audit.read_text().splitlines()]
    assert [face["decision"].split(" (")[0] for face in line["kept"]] == ["kept: matched ref"]
