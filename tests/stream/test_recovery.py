"""Authorised recovery end to end: a run seals the originals of every masked region for a
public key; with the private key one track comes back exact while every other face stays
hidden; the sidecar gives nothing away, and every kind of tampering is found with its own
message, with nothing restored and nothing half-written."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import av
import c2pa
import cv2
import numpy as np
import pytest
import skimage.data

from veil.cli import main
from veil.errors import InputError
from veil.stream.anonymisers.classic import Anonymiser
from veil.stream.detectors import make_detector
from veil.stream.jobs import run
from veil.stream.options import Options
from veil.stream.recovery import access
from veil.stream.recovery.keys import generate, load_private
from veil.stream.recovery.restore import open_for
from veil.stream.recovery.sidecar import MAGIC, Sidecar, sidecar_path
from veil.stream.stages.seal import reach
from veil.testing.privacy import leaked_faces


def frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def inside(rect, box) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    generate(folder / "controller")
    generate(folder / "stranger")
    return folder


@pytest.fixture(scope="module")
def sealed(keys, example_clip, tmp_path_factory):
    """The example clip blurred with its originals sealed for the controller: (input, output)."""
    out = tmp_path_factory.mktemp("sealed") / "out.mp4"
    run(str(example_clip[0]), str(out), Options(progress=False, recovery_keys=(str(keys / "controller.pub"),)), log=lambda line: None)
    return example_clip[0], out


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VEIL_KEY_PASSPHRASE", "correct horse")
    assert main(["keygen", "-o", str(tmp_path / "ctl"), "--passphrase"]) == 0
    assert (tmp_path / "ctl.key").stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED" in (tmp_path / "ctl.key").read_bytes()
    load_private(tmp_path / "ctl.key", b"correct horse")
    with pytest.raises(InputError, match="wrong passphrase"):
        load_private(tmp_path / "ctl.key", b"wrong")
    with pytest.raises(InputError, match="needs its passphrase"):
        load_private(tmp_path / "ctl.key")
    assert main(["keygen", "-o", str(tmp_path / "ctl")]) == 2
    assert "never overwrites" in capsys.readouterr().err


def test_one_restored_track_is_exact_inside_its_regions_and_every_other_face_stays_hidden(sealed, keys, tmp_path, gate, capsys):
    source, out = sealed
    key = load_private(keys / "controller.key")
    found = open_for(out, key)
    tracks = found.tracks()
    assert len(tracks) >= 4
    chosen = max(tracks, key=lambda t: len(tracks[t]))
    restored_path = tmp_path / "restored.mkv"
    assert main(["recover", str(out), "--key", str(keys / "controller.key"), "--track", str(chosen), "-o", str(restored_path)]) == 0
    originals, anonymised, restored = frames(source), frames(out), frames(restored_path)
    assert len(originals) == len(anonymised) == len(restored)
    by_frame: dict[int, list] = {}
    for region in found.regions:
        by_frame.setdefault(region.frame, []).append(region)
    exact = 0
    for index, regions in by_frame.items():
        others = np.zeros(originals[index].shape[:2], bool)
        for region in regions:
            if region.track != chosen:
                others[region.rect[1] : region.rect[3], region.rect[0] : region.rect[2]] = True
        mine = np.zeros_like(others)
        for region in regions:
            if region.track == chosen:
                mine[region.rect[1] : region.rect[3], region.rect[0] : region.rect[2]] = True
        put_back = mine & ~others
        assert (restored[index][put_back] == originals[index][put_back]).all(), f"frame {index}: not the decoded input"
        assert (restored[index][~put_back] == anonymised[index][~put_back]).all(), f"frame {index}: outside it, not the anonymised video"
        exact += int(put_back.sum())
    assert exact > 0
    for index in range(0, len(originals), 3):  # the gate finds again only the chosen person
        for box in leaked_faces(gate.detect(originals[index]), restored[index], gate):
            assert any(inside(r.rect, box) for r in by_frame.get(index, []) if r.track == chosen), f"frame {index}: another face shows"
    assert main(["recover", str(out), "--verify-log", "--key", str(keys / "controller.key")]) == 0
    assert "1 records, chain intact" in capsys.readouterr().out


def test_a_restored_photo_is_exact_inside_the_chosen_face_for_each_of_its_recipients(keys, tmp_path):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "astronaut_anon.png"
    recipients = (str(keys / "controller.pub"), str(keys / "stranger.pub"))
    run(str(photo), str(out), Options(progress=False, recovery_keys=recipients), log=lambda line: None)
    assert main(["recover", str(out), "--key", str(keys / "controller.key"), "--track", "0", "-o", str(tmp_path / "back.png")]) == 0
    assert Sidecar(sidecar_path(out), load_private(keys / "stranger.key")).regions  # the second recipient opens it too
    region = Sidecar(sidecar_path(out), load_private(keys / "controller.key")).regions[0]
    left, top, right, bottom = region.rect
    original, back, anonymised = (cv2.imread(str(p)) for p in (photo, tmp_path / "back.png", out))
    assert (back[top:bottom, left:right] == original[top:bottom, left:right]).all()
    assert not (anonymised[top:bottom, left:right] == original[top:bottom, left:right]).all()


@pytest.mark.parametrize("mode", ["blur", "solid", "synth"])
def test_a_region_holds_every_pixel_the_anonymiser_changes(mode, example_clip):
    image = frames(example_clip[0])[40]
    faces = make_detector("yunet").detect(image)
    assert len(faces) >= 3
    anonymiser = Options(mode=mode).anonymiser()
    changed = (anonymiser.apply(image, faces) != image).any(axis=2)
    held = np.zeros_like(changed)
    for i in range(len(faces)):
        left, top, right, bottom = reach(anonymiser, faces, i, *image.shape[:2])
        held[top:bottom, left:right] = True
    assert changed.any() and not (changed & ~held).any()
    assert isinstance(anonymiser, Anonymiser) or mode == "synth"


def test_the_sidecar_gives_nothing_away(sealed, keys, capsys):
    _, out = sealed
    data = sidecar_path(out).read_bytes()
    found = Sidecar(sidecar_path(out), load_private(keys / "controller.key"))
    for region in found.regions[:: max(1, len(found.regions) // 10)]:
        pixels = found.pixels(region)
        for needle in (pixels[:4].tobytes(), cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()[64:128]):
            assert needle not in data
    assert main(["recover", str(out), "--key", str(keys / "stranger.key"), "--list"]) == 2
    assert "was not sealed for this key" in capsys.readouterr().err


def chunks(data: bytes) -> list[bytes]:
    """A sidecar's chunks, each with its length prefix."""
    at, found = len(MAGIC), []
    while at < len(data):
        (length,) = struct.unpack_from(">I", data, at)
        found.append(data[at : at + 4 + length])
        at += 4 + length
    return found


@pytest.fixture(scope="module")
def other_run(keys, tmp_path_factory, example_clip):
    out = tmp_path_factory.mktemp("other") / "other.mp4"
    run(str(example_clip[0]), str(out), Options(progress=False, mode="pixelate", recovery_keys=(str(keys / "controller.pub"),)),
        log=lambda line: None)  # fmt: skip
    return out


def flip(parts):
    body = bytearray(parts[2])
    body[-40] ^= 0x01  # in the sealed pixels, just before the MAC
    return parts[:2] + [bytes(body)] + parts[3:]


@pytest.mark.parametrize("tamper, message", [
    (flip, "chunk 2 of .* is modified"),
    (lambda parts: parts[:2] + parts[3:], "chunk 2 of .* is missing"),
    (lambda parts: parts[:1] + [parts[2], parts[1]] + parts[3:], "are out of order"),
    ("append", "comes from another sidecar"),
    (lambda parts: parts[:-2], "has no closing chunk: its run was cut off"),
])  # fmt: skip
def test_every_kind_of_tampering_is_found_and_nothing_is_restored(tamper, message, sealed, other_run, keys, tmp_path, capsys):
    _, out = sealed
    parts = chunks(sidecar_path(out).read_bytes())
    assert len(parts) >= 4
    if tamper == "append":
        changed = parts + [chunks(sidecar_path(other_run).read_bytes())[2]]
    else:
        changed = tamper(parts)
    forged = tmp_path / "forged.veilrec"
    forged.write_bytes(MAGIC + b"".join(changed))
    restored = tmp_path / "restored.mkv"
    code = main(["recover", str(out), "--sidecar", str(forged), "--key", str(keys / "controller.key"), "--all-tracks", "-o", str(restored)])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [forged], "nothing restored, nothing half-written"


@pytest.mark.parametrize("span, message", [
    (["--from", "nan"], "--from is a time in seconds, 0 or more, got nan"),
    (["--to", "inf"], "--to is a time in seconds, 0 or more, got inf"),
    (["--from", "-1"], "--from is a time in seconds"),
    (["--from", "2", "--to", "1"], "--to 1 is before --from 2"),
])  # fmt: skip
def test_a_time_span_that_is_not_one_is_refused_before_anything_opens(span, message, sealed, keys, tmp_path, capsys):
    _, out = sealed
    code = main(["recover", str(out), "--key", str(keys / "controller.key"), "--all-tracks", *span, "-o", str(tmp_path / "r.mkv")])
    assert code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_sidecar_from_another_video_is_refused(sealed, other_run, keys, tmp_path, capsys):
    _, out = sealed
    code = main(["recover", str(other_run), "--sidecar", str(sidecar_path(out)), "--key", str(keys / "controller.key"), "--all-tracks",
                 "-o", str(tmp_path / "r.mkv")])  # fmt: skip
    assert code == 2 and "sidecar of another video" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_live_recording_killed_mid_stream_recovers_every_frame_of_its_complete_chunks(keys, tmp_path, capsys):
    from veil.testing.clips import make_example_clip

    clip = tmp_path / "camera.mp4"
    make_example_clip(clip, width=640, height=360, seconds=20.0)
    recording = tmp_path / "rec.mkv"
    veil = subprocess.Popen([sys.executable, "-m", "veil", "run", str(clip), "-o", str(recording), "--live",
                             "--recovery-key", str(keys / "controller.pub")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    sidecar = sidecar_path(tmp_path / "rec.partial.mkv")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not sidecar.exists() or len(chunks(sidecar.read_bytes())) < 5):
        time.sleep(0.2)
    time.sleep(0.5)  # into the middle of a chunk
    assert veil.poll() is None, veil.stdout.read().decode()
    veil.send_signal(signal.SIGKILL)
    veil.wait(timeout=10)
    key = load_private(keys / "controller.key")
    with pytest.raises(InputError, match="has no closing chunk"):
        Sidecar(sidecar, key)
    found = Sidecar(sidecar, key, partial=True)
    assert found.frames >= 4 * 25  # four chunks of a second each, at least, were complete
    assert all(found.pixels(region).size for region in found.regions)  # every region of them opens
    assert max(region.frame for region in found.regions) >= found.frames - 25  # faces up to the last complete chunk


def test_the_access_log_finds_a_changed_or_removed_line(tmp_path):
    log = tmp_path / "x.veilrec.access.jsonl"
    for n in range(3):
        access.append(log, {"action": "recover", "tracks": [n]})
    assert access.verify(log) == 3
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], lines[1].replace("[1]", "[7]"), lines[2]]) + "\n")
    with pytest.raises(InputError, match="line 2 was changed"):
        access.verify(log)
    log.write_text("\n".join([lines[0], lines[2]]) + "\n")
    with pytest.raises(InputError, match="line 2 does not follow line 1"):
        access.verify(log)


def test_inspect_says_what_a_file_is(sealed, tmp_path, capsys):
    _, out = sealed
    assert main(["inspect", str(out)]) == 0
    said = capsys.readouterr().out
    assert "mode: blur" in said and "generated faces: no" in said and str(sidecar_path(out)) in said
    assert os.path.exists(sidecar_path(out))
    plain = tmp_path / "plain.mp4"
    with av.open(str(plain), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 64
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="bgr24")))
        container.mux(stream.encode(None))
    assert main(["inspect", str(plain)]) == 0
    assert "no mark of Veil" in capsys.readouterr().out
    assert Path(plain).exists()


def manifest(path) -> dict:
    """The active C2PA manifest as c2pa's own reader gives it, with its validation state."""
    with c2pa.Reader(str(path)) as reader:
        store = json.loads(reader.json())
    return {**store["manifests"][store["active_manifest"]], "state": store["validation_state"]}


def ai_generated(found: dict) -> bool:
    actions = next(a["data"]["actions"] for a in found["assertions"] if a["label"].startswith("c2pa.actions"))
    return any(a.get("digitalSourceType", "").endswith("/compositeWithTrainedAlgorithmicMedia") for a in actions)


def test_synth_outputs_carry_a_c2pa_manifest_saying_their_faces_are_generated_and_blur_outputs_do_not(sealed, example_clip, tmp_path, capsys):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    for out in (tmp_path / "synth.jpg", tmp_path / "synth.png"):
        run(str(photo), str(out), Options(progress=False, mode="synth"), log=lambda line: None)
        found = manifest(out)
        assert found["state"] == "Valid" and ai_generated(found)
        assert cv2.imread(str(out)).shape == cv2.imread(str(photo)).shape  # still a photo every reader opens
    video = tmp_path / "synth.mp4"
    run(str(example_clip[0]), str(video), Options(progress=False, mode="synth"), log=lambda line: None)
    found = manifest(video)
    assert found["state"] == "Valid" and ai_generated(found)
    assert len(frames(video)) == len(frames(example_clip[0]))
    assert main(["inspect", str(video)]) == 0
    assert "says the faces are generated by AI" in capsys.readouterr().out
    _, blurred = sealed
    found = manifest(blurred)
    assert found["state"] == "Valid" and not ai_generated(found)
    with av.open(str(blurred)) as container:
        tags = dict(container.metadata)
    marks = next(a["data"] for a in found["assertions"] if a["label"] == "veil.marks")
    assert marks == {name: tags[name] for name in ("veil_anonymised", "veil_mode", "veil_generated_faces", "veil_recovery")}
    assert marks["veil_mode"] == "blur"


def test_a_changed_byte_makes_the_c2pa_manifest_invalid(sealed, tmp_path, capsys):
    _, blurred = sealed
    data = bytearray(blurred.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed = tmp_path / "changed.mp4"
    changed.write_bytes(bytes(data))
    assert manifest(changed)["state"] == "Invalid"
    assert main(["inspect", str(changed)]) == 0
    assert "C2PA manifest: INVALID (assertion.bmffHash.mismatch" in capsys.readouterr().out
