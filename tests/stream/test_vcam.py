"""`veil camera`'s virtual camera sink, against pyvirtualcam's own ``Camera`` with a
recording device behind it (no v4l2loopback module can be loaded in CI): the real
pipeline runs, only the device is fake."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import veil.commands.camera
import veil.stream.jobs.live
from tests.known_faces import raw_faces
from veil.commands.camera import run_camera
from veil.errors import InputError, MissingDependency, OutputError
from veil.stream.elements import Source
from veil.stream.frame import Frame
from veil.stream.io import vcam
from veil.stream.io.live import CLOCK, LiveSource
from veil.stream.io.vcam import VirtualCameraSink, install_hint
from veil.stream.jobs import run_live
from veil.stream.options import Options
from veil.testing import timecode
from veil.testing.privacy import leaked_faces

pyvirtualcam = pytest.importorskip("pyvirtualcam", reason="pyvirtualcam is not installed: pip install 'veil[vcam]'")

BACKEND = "veil-test-recorder"
# pyvirtualcam's Linux backend's own words when no loopback device exists.
NO_LOOPBACK = "No v4l2 loopback device found at /dev/video[0-99]. Did you run 'modprobe v4l2loopback'? See also pyvirtualcam's documentation."
RED = (0, 0, 255)  # BGR
PATCH = np.s_[0:32, 256:320]  # beside the timecode, away from the clip's faces


class RecordingDevice:
    """A pyvirtualcam backend (its documented Backend interface) that keeps each frame
    it is sent with the time it came, and counts closes."""

    def __init__(self, *, width, height, fps, fourcc, device, recorder, **kw):
        if recorder.fail is not None:
            raise recorder.fail
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.name = device or "/dev/video-recorder"
        self.frames: list[tuple[float, np.ndarray]] = []
        self.closes = 0
        recorder.opened.append(self)

    def send(self, frame: np.ndarray) -> None:
        # pyvirtualcam hands backends a flat C-contiguous uint8 array.
        image = frame.reshape(self.height, self.width, 3).copy()
        self.frames.append((time.monotonic(), image))

    def close(self) -> None:
        self.closes += 1

    def device(self) -> str:
        return self.name

    def native_fourcc(self):
        return self.fourcc


class Recorder:
    """A factory with ``pyvirtualcam.Camera``'s signature: the real Camera class (its
    argument handling, frame checks and error wrapping) in front of a RecordingDevice."""

    def __init__(self, fail: BaseException | None = None):
        self.fail = fail
        self.opened: list[RecordingDevice] = []

    def __call__(self, **kwargs):
        return pyvirtualcam.Camera(backend=BACKEND, recorder=self, **kwargs)

    @property
    def last(self) -> RecordingDevice:
        return self.opened[-1]


@pytest.fixture(autouse=True)
def recording_backend():
    pyvirtualcam.register_backend(BACKEND, RecordingDevice)
    yield
    del pyvirtualcam.camera.BACKENDS[BACKEND]


def frame_of(image: np.ndarray) -> Frame:
    return Frame(image=image, pts=0, time_base=CLOCK, index=0)


def quiet(*_):
    pass


class Stamped(Source):
    """A live source whose frames carry their number in the timecode corner and a red
    patch beside it; keeps each input picture to compare with what came out."""

    live = True

    def __init__(self, source: LiveSource):
        self.source, self.rate = source, source.rate
        self.inputs: dict[int, np.ndarray] = {}
        self.clip_index: dict[int, int] = {}  # which frame of the clip each number is

    @property
    def dropped(self) -> int:
        return self.source.dropped

    def __iter__(self):
        first = None
        for number, frame in enumerate(self.source):
            first = frame.time if first is None else first
            self.clip_index[number] = round((frame.time - first) * float(self.rate))
            image = frame.image.copy()
            timecode.stamp(image, number)
            image[PATCH] = RED
            self.inputs[number] = image
            yield frame.replace(image=image)


def test_every_frame_the_virtual_camera_gets_is_anonymised_bgr_and_camera_sized(example_clip, gate, live_yunet):
    clip, truth = example_clip
    recorder = Recorder()
    source = Stamped(LiveSource(str(clip), realtime=True, log=quiet))
    sink = VirtualCameraSink(640, 360, float(source.rate), camera=recorder, log=quiet)
    try:
        report = run_live(source, sink, Options(progress=False), live_yunet, log=quiet)
    finally:
        source.source.close()
    camera = recorder.last
    assert camera.closes == 1, "run_live must close the virtual camera"
    assert camera.fourcc == pyvirtualcam.camera.encode_fourcc("24BG"), "not asked for BGR"
    # Live drops happen at the source, before anonymising; every frame that got
    # through reached the camera, in order.
    assert len(camera.frames) == report.frames > len(truth) // 2
    assert report.frames + source.dropped == len(truth)
    assert report.failed_frames == 0
    numbers = [timecode.read(image) for _, image in camera.frames]
    assert None not in numbers and numbers == sorted(set(numbers))

    found = leaked = 0
    for number, (_, received) in zip(numbers, camera.frames):  # every frame the camera got
        assert received.shape == (360, 640, 3) and received.dtype == np.uint8
        assert (received[PATCH] == RED).all(), f"colour channels changed on frame {number}"
        sent = source.inputs[number]
        assert raw_faces(sent, received, truth[source.clip_index[number]]) == [], f"a known face left raw on frame {number}"
        faces = gate.detect(sent)
        found += len(faces)
        leaked += len(leaked_faces(faces, received, gate))
    assert found >= 60, "the gate must see the faces in the input for this to mean anything"
    assert leaked == 0


def test_frames_kept_on_the_device_reach_the_camera_as_bgr(example_clip, gate, live_yunet):
    """The GPU path hands encoders I420; the camera takes BGR only, so it gets BGR
    (here on torch CPU tensors, through the kernels' CPU shim)."""
    pytest.importorskip("torch")
    clip, _ = example_clip
    recorder = Recorder()
    source = Stamped(LiveSource(str(clip), realtime=False, log=quiet))
    sink = VirtualCameraSink(640, 360, float(source.rate), camera=recorder, log=quiet)
    try:
        report = run_live(source, sink, Options(progress=False, mode="blur", frames_on_device=True), live_yunet, log=quiet)
    finally:
        source.source.close()
    camera = recorder.last
    assert report.failed_frames == 0 and len(camera.frames) == report.frames > 0
    found = leaked = 0
    for _, received in camera.frames:
        assert received.shape == (360, 640, 3)
        assert (received[PATCH] == RED).all(), "BGR, not another layout"
        faces = gate.detect(source.inputs[timecode.read(received)])
        found += len(faces)
        leaked += len(leaked_faces(faces, received, gate))
    assert found >= 5 and leaked == 0, (report.frames, found, leaked)


def test_the_sink_sends_the_image_unchanged_in_bgr_order():
    recorder = Recorder()
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), np.uint8)
    image[:8, :8] = RED
    with VirtualCameraSink(64, 48, 30, device="/dev/video10", camera=recorder) as sink:
        assert sink.device == "/dev/video10"
        sink.write(frame_of(image))
    camera = recorder.last
    assert (camera.width, camera.height, camera.fps) == (64, 48, 30)
    ((_, sent),) = camera.frames
    np.testing.assert_array_equal(sent, image)
    assert tuple(sent[0, 0]) == RED


def test_a_frame_of_another_size_is_scaled_into_the_camera_with_black_bars():
    recorder, lines = Recorder(), []
    sink = VirtualCameraSink(64, 48, 30, camera=recorder, log=lines.append)
    sink.write(frame_of(np.full((16, 32, 3), RED, np.uint8)))  # 2:1 into 4:3
    sink.write(frame_of(np.full((16, 32, 3), RED, np.uint8)))
    sink.close()
    (_, first), (_, second) = recorder.last.frames
    assert first.shape == (48, 64, 3)
    assert (first[8:40] == RED).all() and not first[:8].any() and not first[40:].any()
    np.testing.assert_array_equal(first, second)
    assert len(lines) == 1 and "32x16" in lines[0], "say it once per new size"


def test_a_frame_that_is_not_bgr_uint8_is_an_output_error():
    sink = VirtualCameraSink(64, 48, 30, camera=Recorder())
    with pytest.raises(OutputError, match="HxWx3 uint8"):
        sink.write(Frame(image=np.zeros((72, 64), np.uint8), pts=0, time_base=CLOCK, index=0, layout="i420"))
    with pytest.raises(OutputError, match="HxWx3 uint8"):
        sink.write(frame_of(np.zeros((48, 64, 3), np.float32)))


def test_no_virtual_camera_is_an_output_error_that_says_what_to_install():
    # pyvirtualcam wraps a backend's error as "'<backend>' backend: <text>".
    with pytest.raises(OutputError) as error:
        VirtualCameraSink(640, 480, 30, camera=Recorder(fail=RuntimeError(NO_LOOPBACK)))
    message = str(error.value)
    assert "\n" not in message
    assert NO_LOOPBACK in message, "pyvirtualcam's own reason is kept"
    assert install_hint() in message
    if sys.platform.startswith("linux"):
        assert "v4l2loopback" in install_hint()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the v4l2loopback backend is Linux's")
def test_pyvirtualcam_itself_without_the_device_gives_the_install_line():
    with pytest.raises(OutputError) as error:
        VirtualCameraSink(640, 480, 30, device="/dev/video-veil-missing")
    message = str(error.value)
    assert "/dev/video-veil-missing does not exist" in message
    assert "sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback" in message


@pytest.mark.parametrize(
    ("platform", "words"),
    [
        (
            "linux",
            [
                "v4l2loopback-dkms",
                "modprobe v4l2loopback",
                "video_nr=10",
                "exclusive_caps=1",
            ],
        ),
        ("win32", ["OBS Studio 26", "Virtual Camera", "Unity Capture"]),
        ("darwin", ["OBS Studio 26", "Start Virtual Camera once"]),
    ],
)
def test_the_install_line_fits_the_platform(platform, words):
    hint = install_hint(platform=platform)
    for word in words:
        assert word in hint


def test_the_install_line_creates_the_device_asked_for():
    assert "video_nr=7" in install_hint("/dev/video7", platform="linux")


def test_closing_the_sink_closes_the_camera_once_and_later_writes_fail():
    recorder = Recorder()
    sink = VirtualCameraSink(64, 48, 30, camera=recorder)
    sink.close()
    sink.close()
    assert recorder.last.closes == 1
    with pytest.raises(OutputError, match="closed"):
        sink.write(frame_of(np.zeros((48, 64, 3), np.uint8)))


def test_a_camera_that_stops_taking_frames_is_an_output_error():
    recorder = Recorder()
    sink = VirtualCameraSink(64, 48, 30, camera=recorder)

    def broken(frame):
        raise RuntimeError("Device /dev/video10 went away")

    recorder.last.send = broken
    with pytest.raises(OutputError, match="stopped taking frames: Device /dev/video10 went away"):
        sink.write(frame_of(np.zeros((48, 64, 3), np.uint8)))


def test_without_pyvirtualcam_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import fails
    with pytest.raises(MissingDependency, match=r"pip install 'veil\[vcam\]'"):
        VirtualCameraSink(640, 480, 30)


# --- run_camera --------------------------------------------------------------


def not_reached(*args, **kwargs):
    pytest.fail("opened the webcam or loaded a model before checking the virtual camera")


def test_no_virtual_camera_fails_before_the_webcam_or_the_model(monkeypatch):
    monkeypatch.setattr(veil.stream.jobs.live, "LiveSource", not_reached)
    monkeypatch.setattr(veil.commands.camera, "live_detector", not_reached)
    with pytest.raises(OutputError, match="no virtual camera"):
        run_camera(
            "/dev/video0", None, Options(progress=False),
            camera=Recorder(fail=RuntimeError(NO_LOOPBACK)), log=quiet,
        )  # fmt: skip


def test_a_webcam_that_cannot_open_is_an_input_error_and_the_camera_is_closed():
    recorder = Recorder()
    with pytest.raises(InputError, match="/dev/video-veil-missing"):
        run_camera(
            "/dev/video-veil-missing",
            None,
            Options(progress=False),
            camera=recorder,
            log=quiet,
        )
    assert recorder.opened and all(camera.closes == 1 for camera in recorder.opened)


def test_bad_size_or_the_webcam_as_output_are_input_errors():
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        run_camera("/dev/video0", None, Options(), size="720p", camera=Recorder(), log=quiet)
    with pytest.raises(InputError, match="both /dev/video3"):
        run_camera("/dev/video3", "/dev/video3", Options(), camera=Recorder(), log=quiet)


def test_run_camera_writes_the_webcam_into_the_camera_it_probed_and_closes_both(example_clip, monkeypatch):
    clip, truth = example_clip
    sources = []

    class ClipAsWebcam(LiveSource):
        """The example clip, played at its own pace, where the webcam would be."""

        def __init__(self, url, *, format, options, **kwargs):
            super().__init__(str(clip), realtime=True, **kwargs)
            self.closes = 0
            sources.append(self)

        def close(self):
            self.closes += 1
            super().close()

    monkeypatch.setattr(veil.stream.jobs.live, "LiveSource", ClipAsWebcam)
    recorder, lines = Recorder(), []
    report = run_camera(
        "/dev/video0",
        "/dev/video10",
        Options(progress=False),
        camera=recorder,
        log=lines.append,
    )
    probe, camera = recorder.opened
    assert (probe.width, probe.height) == vcam.PROBE_SIZE
    assert camera.name == "/dev/video10" and (camera.width, camera.height) == (640, 360)
    assert camera.fps == 25
    assert len(camera.frames) == report.frames > len(truth) // 2
    assert probe.closes == 1 and camera.closes == 1 and sources[0].closes == 1
    assert any("virtual camera /dev/video10" in line for line in lines)
