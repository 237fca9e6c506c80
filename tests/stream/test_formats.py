"""Containers and timestamps as users meet them: webm, GIF and AVIF in and out, AVI with
B-frames, a splice whose timestamps go backwards, photos with transparency."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from tests.known_faces import raw_faces
from tests.veil.test_cli import assert_clean_input_error, veil
from veil.testing.clips import make_example_clip, render_frames
from veil.testing.privacy import decoded_frames, leaked_faces


def frames_and_times(path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
    return [f.to_ndarray(format="bgr24") for f in decoded], [float(f.time) for f in decoded]


def assert_anonymised(original, output, truth, gate):
    for (index, before), (_, after) in zip(decoded_frames(original), decoded_frames(output), strict=True):
        assert raw_faces(before, after, truth[index]) == [], f"a face left raw on frame {index}"
        assert len(leaked_faces(gate.detect(before), after, gate)) == 0, f"the gate finds a face on frame {index}"


@pytest.mark.slow  # VP9 encodes at a few fps here: a minute
def test_a_webm_output_is_vp9_with_its_audio_re_encoded_as_opus(example_clip, tmp_path, gate):
    clip, truth = example_clip
    out = tmp_path / "out.webm"
    result = veil("run", clip, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert container.streams.audio[0].codec_context.name == "opus", "AAC cannot go into webm: it is re-encoded"
        audio_seconds = sum(f.samples for f in container.decode(audio=0)) / 48000
    assert audio_seconds == pytest.approx(3.0, abs=0.1)
    assert_anonymised(clip, out, truth, gate)


def test_an_output_extension_veil_does_not_write_is_one_line(example_clip, tmp_path):
    clip, _ = example_clip
    assert_clean_input_error(veil("run", clip, "-o", tmp_path / "out.mp3", "-q"), "Veil does not write .mp3; write one of .mp4")
    assert not list(tmp_path.iterdir())


def test_a_video_is_not_written_to_a_photo_nor_a_photo_to_a_video(example_clip, tmp_path):
    clip, _ = example_clip
    assert_clean_input_error(veil("run", clip, "-o", tmp_path / "out.png"), "is a video; write one of")
    photo = tmp_path / "still.jpg"
    cv2.imwrite(str(photo), next(render_frames(320, 180, 1, 1.0))[0])
    assert_clean_input_error(veil("run", photo, "-o", tmp_path / "still.mp4"), "is a photo; write one of")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["still.jpg"]


@pytest.mark.parametrize("suffix", [".gif", ".avif", ".webp"])
def test_still_gif_avif_and_webp_photos_are_photos_in_and_out(suffix, tmp_path, gate):
    image, boxes = next(render_frames(640, 360, 1, 1.0))
    photo = tmp_path / f"in{suffix}"
    assert cv2.imwrite(str(photo), image)
    out = tmp_path / f"out{suffix}"
    result = veil("run", photo, "-o", out)
    assert result.returncode == 0, result.stderr
    before, after = cv2.imread(str(photo)), cv2.imread(str(out))
    assert raw_faces(before, after, boxes) == [] and len(leaked_faces(gate.detect(before), after, gate)) == 0


def test_an_animated_gif_is_a_video_and_can_be_written_as_one(tmp_path, gate):
    truth, images = [], []
    for image, boxes in render_frames(320, 180, 10, 2.0):
        images.append(image)
        truth.append(boxes)
    animation = tmp_path / "in.gif"
    with av.open(str(animation), "w") as container:
        stream = container.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "rgb8"
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))
    for suffix in (".gif", ".mp4"):
        out = tmp_path / f"out{suffix}"
        result = veil("run", animation, "-o", out, "-q")
        assert result.returncode == 0, result.stderr
        assert len(frames_and_times(out)[0]) == len(images)
        assert_anonymised(animation, out, truth, gate)


def bframe_avi(path, seconds: float = 4.0) -> list:
    """What OpenCV's vtest.avi is: H.264 with B-frames in AVI, with AAC, at 10 fps."""
    truth = []
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 480, 270, "yuv420p"
        video.options = {"bf": "3", "crf": "18"}
        audio = container.add_stream("aac", rate=44100, layout="mono")
        for index, (image, boxes) in enumerate(render_frames(480, 270, 10, seconds)):
            picture = av.VideoFrame.from_ndarray(image, format="bgr24")
            picture.pts = index
            container.mux(video.encode(picture))
            truth.append(boxes)
        container.mux(video.encode(None))
        tone = np.sin(np.arange(int(44100 * seconds)) / 10).astype(np.float32)[None] * 0.2
        for start in range(0, tone.shape[1], 1024):
            sound = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 44100, start
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return truth


def test_an_avi_with_b_frames_keeps_every_frame_evenly_timed(tmp_path, gate):
    clip = tmp_path / "bframes.avi"
    truth = bframe_avi(clip)
    with av.open(str(clip)) as container:
        decoded = [f.pts for f in container.decode(video=0)]
    assert any(b <= a for a, b in zip(decoded, decoded[1:])), "the input's decoded pts must go backwards for this to mean anything"
    out = tmp_path / "out.mp4"
    result = veil("run", clip, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "timed as FFmpeg does" in result.stdout
    images, times = frames_and_times(out)
    assert len(images) == len(truth)
    np.testing.assert_allclose(np.diff(times), 0.1, atol=1e-6)  # 10 fps, no frame dropped or doubled
    with av.open(str(out)) as container:
        assert container.streams.audio, "the audio is kept"
    assert_anonymised(clip, out, truth, gate)


def test_a_splice_whose_timestamps_go_backwards_keeps_every_frame_and_its_spacing(tmp_path):
    parts = []
    for number in range(2):  # two MPEG-TS recordings, each starting at 0, joined byte for byte
        part = tmp_path / f"part{number}.ts"
        make_example_clip(part, width=320, height=180, fps=25, seconds=1.0, audio=False)
        parts.append(part.read_bytes())
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(b"".join(parts))
    with av.open(str(spliced)) as container:
        decoded = [f.pts for f in container.decode(video=0)]
    assert any(b < a for a, b in zip(decoded, decoded[1:])), "the splice must send the pts back for this to mean anything"
    out = tmp_path / "out.mkv"
    result = veil("run", spliced, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    _, times = frames_and_times(out)
    assert len(times) == len(decoded) == 50
    np.testing.assert_allclose(np.diff(times), 0.04, atol=1e-3)


def astronaut_with_alpha() -> np.ndarray:
    image = next(render_frames(320, 180, 1, 1.0))[0]
    alpha = np.full(image.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0  # a transparent strip
    alpha[:, 40:80] = 128
    return np.dstack([image, alpha])


def test_a_photo_keeps_its_transparency_where_the_output_can_hold_it(tmp_path):
    photo = tmp_path / "in.png"
    cv2.imwrite(str(photo), astronaut_with_alpha())
    result = veil("run", photo, "-o", tmp_path / "out.png")
    assert result.returncode == 0, result.stderr
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape[2] == 4
    np.testing.assert_array_equal(out[:, :, 3], astronaut_with_alpha()[:, :, 3])
    result = veil("run", photo, "-o", tmp_path / "out.jpg")
    assert result.returncode == 0, result.stderr
    assert "has transparency, which .jpg files cannot hold: written opaque" in result.stdout


def test_an_unreadable_photo_is_one_line(tmp_path):
    photo = tmp_path / "broken.avif"
    photo.write_bytes(b"not an image at all" * 50)
    assert_clean_input_error(veil("run", photo, "-o", tmp_path / "out.avif"), "cannot read image")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.avif"]


def test_odd_sized_vp9_keeps_every_pixel(tmp_path):
    from tests.conftest import lossless_clip

    src = lossless_clip(tmp_path / "odd.mkv", [np.full((179, 321, 3), 40 * i, np.uint8) for i in range(5)])
    result = veil("run", src, "-o", tmp_path / "odd.webm", "-q")
    assert result.returncode == 0, result.stderr
    images, _ = frames_and_times(tmp_path / "odd.webm")
    assert len(images) == 5 and images[0].shape == (179, 321, 3)


def test_vfr_timing_survives_a_time_base_change(tmp_path):
    """The encoder is fed the source's time base; a container with its own (webm's 1/1000)
    rescales it: the frames still come out at their times."""
    clip = tmp_path / "vfr.mkv"
    gaps = [1, 1, 3, 1, 2, 5, 1, 1, 4, 1]
    pts = list(np.cumsum([0] + gaps[:-1]) * 40)
    make_example_clip(clip, width=320, height=180, fps=25, seconds=len(pts) / 25, frame_pts=pts, time_base=Fraction(1, 1000), audio=False)
    result = veil("run", clip, "-o", tmp_path / "out.webm", "-q")
    assert result.returncode == 0, result.stderr
    _, times = frames_and_times(tmp_path / "out.webm")
    np.testing.assert_allclose(times, [p / 1000 for p in pts], atol=1e-3)
