"""The pipeline description: a launch line or a TOML file that says what the flags say, and
one-line errors that name what is valid."""

from __future__ import annotations

import pytest

from veil.errors import InputError
from veil.stream.description import ELEMENTS, Description
from veil.stream.options import Options

SETTINGS = [
    Options(),
    Options(mode="pixelate", strength=2.5, margin=0.6, shape="box", coast_s=2.0, tentative_coast_s=0.5, backfill_s=0.4),
    Options(mode="synth", keyframe_every=4, secret="site-7", generator="runs/g.onnx", detector="centerface",
            detector_options={"score_threshold": 0.3, "input_size": 960}, audit="run.audit.jsonl"),
    Options(mode="solid", detect_every=2, backfill_s=0.2, detector_options={"input_size": None, "tiles": True}),
    Options(mode="blur", detector="thorough", detector_options={"tiles": False}, preset="superfast"),
    Options(mode="blur", live=True, target_delay_s=0.25, reconnect_s=12.0, stage_timeout=5.0, backfill_s=0.0),
]  # fmt: skip


def settings_of(options: Options) -> Options:
    """``options`` as a run sees it: the detector's defaults filled in, as a description writes them."""
    return Description.of(options).options(progress=options.progress, verbose=options.verbose)


@pytest.mark.parametrize("options", SETTINGS, ids=lambda o: o.mode)
def test_the_description_of_a_runs_settings_gives_those_settings_back(options):
    description = Description.of(options, "in.mp4", "out.mp4")
    again = description.options(progress=options.progress, verbose=options.verbose)
    expected = {**vars(options), "detector_options": {**again.detector_options, **options.detector_options}}
    assert vars(again) == expected


@pytest.mark.parametrize("options", SETTINGS, ids=lambda o: o.mode)
def test_a_launch_line_reads_back_as_the_same_description(options):
    description = Description.of(options, "in dir/clip.mp4", "rtmp://127.0.0.1/live/x")
    line = description.line()
    assert Description.parse(line) == description
    assert Description.parse(line).options() == settings_of(options)


def test_a_pipeline_file_says_what_the_same_launch_line_says(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(
        'source = { url = "rtsp://127.0.0.1:8554/cam1", live = true, reconnect = 20 }\n'
        'sink = "cam1.mkv"\n'
        '[[element]]\nname = "yunet"\nthreshold = 0.4\nsize = 640\n'
        '[[element]]\nname = "track"\ncoast = 1.5\n'
        '[[element]]\nname = "backfill"\nseconds = 0.2\n'
        '[[element]]\nname = "synth"\nkeyframe-every = 16\nsecret = "x y"\n'
    )  # fmt: skip
    line = ("rtsp://127.0.0.1:8554/cam1 live=true reconnect=20 ! yunet threshold=0.4 size=640 ! track coast=1.5"
            " ! backfill 0.2 ! synth keyframe-every=16 secret='x y' ! cam1.mkv")  # fmt: skip
    assert Description.load(path) == Description.parse(line)
    options = Description.load(path).options()
    assert (options.mode, options.keyframe_every, options.secret, options.coast_s, options.backfill_s) == ("synth", 16, "x y", 1.5, 0.2)
    assert options.detector_options == {"score_threshold": 0.4, "input_size": 640}
    assert options.live and options.reconnect_s == 20


def test_without_a_backfill_element_nothing_is_held_back():
    assert Description.parse("yunet ! track ! blur").options().backfill_s == 0
    assert Description.parse("yunet ! track ! backfill 0.5 ! blur").options().backfill_s == 0.5


@pytest.mark.parametrize(
    "line, message",
    [
        ("yunet ! track ! smudge", "unknown element 'smudge'; valid elements: " + ", ".join(ELEMENTS)),
        ("yunet colour=red ! track ! blur", "yunet has no property 'colour'; valid properties of yunet: threshold, size, tiles, every"),
        ("yunet ! track coast=soon ! blur", "track coast: expected a number, got 'soon'"),
        ("yunet ! track ! blur 3", "blur: '3' is not property=value; valid properties of blur: strength, margin, shape"),
        ("yunet ! track ! blur shape=star", "blur shape: expected one of ellipse, box, contour, got 'star'"),
        ("in.mp4 speed=2 ! yunet ! track ! blur ! out.mp4", "the source has no property 'speed'; valid properties of the source: live"),
        ("yunet ! track", "a pipeline needs exactly one anonymiser"),
        ("track ! blur", "a pipeline needs exactly one detector"),
        ("yunet ! blur", "a pipeline needs exactly one track"),
        ("yunet ! track ! blur ! pixelate", "a pipeline needs exactly one anonymiser (blur, pixelate, solid, synth); got 2"),
        ("yunet ! blur ! track", "elements out of order: yunet ! blur ! track"),
        ("yunet ! track ! backfill 0.2 ! backfill 0.4 ! blur", "at most one backfill"),
        ("yunet ! ! track ! blur", "an element between two '!' is empty"),
        ("yunet ! track ! synth secret='open", "cannot read the pipeline"),
    ],
)  # fmt: skip
def test_a_bad_description_is_one_line_that_names_what_is_valid(line, message):
    with pytest.raises(InputError) as error:
        Description.parse(line)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_value_out_of_range_is_refused_as_the_flag_would_be():
    with pytest.raises(InputError, match="strength must be a number from 1"):
        Description.parse("yunet ! track ! pixelate strength=0.5").options()
    with pytest.raises(InputError, match="detector score threshold must be"):
        Description.parse("yunet threshold=nan ! track ! blur").options()


def test_a_bad_pipeline_file_is_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[element]]\nname = "yunet"\n[[elements]]\nname = "track"\n')
    with pytest.raises(InputError, match="unknown key 'elements' in .*; valid keys: source, sink, element"):
        Description.load(path)
    path.write_text("[[element]\n")
    with pytest.raises(InputError, match="cannot read pipeline file"):
        Description.load(path)
    with pytest.raises(InputError, match="cannot read pipeline file .*missing.toml"):
        Description.load(tmp_path / "missing.toml")
