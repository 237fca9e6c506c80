"""The site file of `veil cameras`: the pipeline file's elements as every camera's defaults,
per-camera overrides, and a one-line error for every fault before anything opens."""

from __future__ import annotations

import pytest

from veil.errors import InputError
from veil.stream.cameras.site import Site
from veil.stream.recovery.keys import generate

PIPELINE = """
[[element]]
name = "yunet"
size = 640
[[element]]
name = "track"
[[element]]
name = "blur"
strength = 2
"""


def site(tmp_path, text: str) -> Site:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return Site.load(path)


def camera(name="gate", source="rtsp://127.0.0.1:8554/cam", extra="record = true"):
    return f'\n[[camera]]\nname = "{name}"\nsource = "{source}"\n{extra}\n'


def test_cameras_take_the_site_pipeline_and_their_own_overrides(tmp_path):
    loaded = site(tmp_path, PIPELINE + camera("gate") + camera("door", extra='record = true\nmode = "pixelate"\nsize = 320\ncoast = 2'))
    gate, door = (c.options() for c in loaded.cameras)
    assert (gate.mode, gate.strength, gate.detector_options["input_size"], gate.coast_s) == ("blur", 2.0, 640, 1.0)
    assert (door.mode, door.strength, door.detector_options["input_size"], door.coast_s) == ("pixelate", 2.0, 320, 2.0)
    assert loaded.cameras[0].record.folder == tmp_path / "recordings"
    assert loaded.status == "127.0.0.1:8090" and loaded.batch_wait_s == 0.005


def test_a_site_without_elements_runs_the_default_pipeline_and_files_are_found_beside_it(tmp_path):
    loaded = site(tmp_path, '[record]\nfolder = "/srv/rec"\nsegment = 60\n' + camera("lobby", "lobby.mp4", 'outputs = ["rtmp://127.0.0.1/live/lobby"]\nrecord = true'))
    lobby = loaded.cameras[0]
    assert lobby.options().mode == "blur" and lobby.source == str(tmp_path / "lobby.mp4")
    assert lobby.outputs == ("rtmp://127.0.0.1/live/lobby",)
    assert (str(lobby.record.folder), lobby.record.segment_s) == ("/srv/rec", 60.0)


def test_a_camera_may_give_its_own_pipeline_as_a_launch_line(tmp_path):
    loaded = site(tmp_path, PIPELINE + camera(extra='record = true\npipeline = "centerface ! track coast=3 ! solid"'))
    options = loaded.cameras[0].options()
    assert (options.detector, options.coast_s, options.mode) == ("centerface", 3.0, "solid")


@pytest.mark.parametrize("text, message", [
    (PIPELINE + "[colour]\nred = 1\n" + camera(), r"unknown key 'colour' in .*site.toml; valid keys: element, source"),
    (PIPELINE + camera(extra="record = true\nbrightness = 2"), r"unknown key 'brightness' in .*camera 1; valid keys: name, source"),
    (PIPELINE + "[record]\nsegments = 5\n" + camera(), r"unknown key 'segments' in .*\[record\]"),
    (PIPELINE + camera("gate") + camera("gate"), r"two cameras are called 'gate'"),
    (PIPELINE, r"no cameras"),
    (PIPELINE + camera("front door"), r"camera 1 needs a name of letters, digits"),
    (PIPELINE + camera(extra=""), r"camera 'gate': nowhere to send its frames; give outputs"),
    (PIPELINE + '[[camera]]\nname = "gate"\nrecord = true\n', r"camera 'gate': no source"),
    (PIPELINE + camera(extra='record = true\nmode = "smudge"'), r"camera 'gate': mode 'smudge': expected one of blur, pixelate"),
    (PIPELINE + camera(extra="record = true\nsize = 8"), r"camera 'gate': detector input size must be a whole number"),
    (PIPELINE + camera(extra='record = {format = "avi"}'), r"recording format 'avi': expected one of mkv, mp4"),
    (PIPELINE + camera(extra="record = {segment = 0.5}"), r"recording segment 0.5 s: expected at least 1 s"),
    (PIPELINE + "[batch]\nwait-ms = 500\n" + camera(), r"wait-ms is 0 to 100"),
    ("[[element]]\nname = \"track\"\n[[element]]\nname = \"blur\"\n" + camera(), r"a pipeline needs exactly one detector"),
    (PIPELINE + "[[camera\n", r"cannot read site file"),
    (PIPELINE + "[record]\nrecovery-keys = 3\n" + camera(), r"recovery-keys is a list of public key files"),
    (PIPELINE + camera(extra="record = true\nkeep = 3"), r"camera 'gate': keep is a list of reference photos or folders"),
    (PIPELINE + camera(extra='record = true\nonly = ["nobody.jpg"]'), r"camera 'gate': reference .*nobody.jpg: no such photo or folder"),
    (PIPELINE + '[record]\nrecovery-keys = ["nothere.pub"]\n' + camera(), r"camera 'gate': .*nothere.pub"),
])  # fmt: skip
def test_every_fault_in_a_site_file_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        site(tmp_path, text)


def test_a_missing_site_file_says_so(tmp_path):
    with pytest.raises(InputError, match="cannot read site file .*nothere.toml: No such file"):
        Site.load(tmp_path / "nothere.toml")


def test_recordings_seal_for_the_site_keys_found_beside_the_site_file(tmp_path):
    generate(tmp_path / "controller")
    loaded = site(tmp_path, PIPELINE + '[record]\nrecovery-keys = ["controller.pub"]\n' + camera() + camera("door", extra="outputs = ['rtmp://x/y']"))
    gate, door = loaded.cameras
    assert gate.record.recovery_keys == (str(tmp_path / "controller.pub"),)
    assert gate.options().recipients() and door.record is None and not door.options().recovery_keys


def test_a_camera_keeps_the_people_of_its_references_found_beside_the_site_file(tmp_path):
    import cv2
    import skimage.data

    cv2.imwrite(str(tmp_path / "astronaut.png"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    gate, door = site(tmp_path, PIPELINE + camera(extra='record = true\nkeep = "astronaut.png"') + camera("door")).cameras
    assert gate.options().keep == (str(tmp_path / "astronaut.png"),) and gate.options().people().names == ["astronaut"]
    assert door.options().selection is None
