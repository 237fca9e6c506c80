"""The GPU-resident path (stream/gpu.py). Without a GPU it runs on torch CPU tensors with
the same kernel sources through the C++ shim, so everything but the device itself is
tested here; on a CUDA machine the `gpu` tests run it on the device."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from veil.errors import InputError
from veil.stream.anonymisers import stream_anonymiser
from veil.stream.anonymisers.classic import cover_whole_frame
from veil.stream.detectors import make_detector
from veil.stream.faces import iou_matrix
from veil.stream.frame import Frame
from veil.stream.gpu import DeviceDetector, DeviceObscurer, DownloadStage, Transfers
from veil.stream.graph import RunReport
from veil.stream.jobs import run_video
from veil.stream.options import Options
from veil.stream.pipeline import build_stages
from veil.testing.privacy import Recogniser, decoded_frames, video_leaks


def on_device(clip, out, detector, device="cpu", log=lambda *_: None, **options) -> RunReport:
    chosen = Options(progress=False, frames_on_device=True, device=device, secret="tests", **options)
    return run_video(clip, out, chosen, detector, log=log)


def cuda_or_skip() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (set VEIL_REQUIRE_GPU=1 to make this a failure)")
    pytest.importorskip("cupy", reason="CuPy is not installed: pip install 'veil[gpu]'")


@pytest.mark.parametrize("mode", ["blur", pytest.param("pixelate", marks=pytest.mark.slow)])  # one kernel family; both in make test-all
def test_no_face_of_the_example_clip_is_found_again_on_the_device_path(example_clip, tmp_path, gate, yunet, mode):
    clip, _ = example_clip
    out = tmp_path / f"{mode}.mp4"
    on_device(clip, out, yunet, mode=mode)
    found, leaked, frames = video_leaks(clip, out, gate, every=3)
    assert found >= 20, "the gate must see the faces in the input for this test to mean anything"
    assert leaked == 0, f"faces found again in frames {frames}"


def test_synth_on_the_device_replaces_who_is_there_as_the_host_path_does(example_clip, tmp_path, yunet):
    """Synth keeps a face there, so the gate is the recogniser: the same bar as the host
    path's test (tests/stream/test_synth.py), and pixels close to the host path's."""
    clip, truth = example_clip
    on_device(clip, tmp_path / "device.mp4", yunet, mode="synth")
    run_video(clip, tmp_path / "host.mp4", Options(progress=False, mode="synth", secret="tests"), yunet, log=lambda *_: None)
    recogniser, distances = Recogniser(), []
    frames = zip(decoded_frames(clip), decoded_frames(tmp_path / "device.mp4"), decoded_frames(tmp_path / "host.mp4"), strict=True)
    for (index, before), (_, device), (_, host) in frames:
        assert np.abs(device.astype(int) - host).mean() < 3, index
        if index % 4:
            continue
        height, width = before.shape[:2]
        for box in truth[index]:
            if box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height:
                distances.append(np.linalg.norm(recogniser.descriptor(before, box) - recogniser.descriptor(device, box)))
    assert len(distances) >= 40
    assert np.mean(np.array(distances) > Recogniser.THRESHOLD) >= 0.85, np.round(np.sort(distances), 2)


def test_each_frame_crosses_once_each_way_and_comes_back_as_i420(example_clip, tmp_path, yunet):
    clip, truth = example_clip
    out = tmp_path / "blur.mp4"
    lines = []
    transfers, frames = on_device(clip, out, yunet, mode="blur", log=lines.append).transfers, len(truth)
    height, width = 360, 640
    assert transfers.uploads == frames and transfers.uploaded_bytes == frames * height * width * 3
    # per frame: the I420 picture, the detector's outputs (two passes: the frame is smaller
    # than YuNet's 960 input) and a 4-byte brightness for the dark-frame check
    assert transfers.downloads == frames * 4
    # The I420 pictures are a quarter of what comes back: YuNet's raw outputs (every
    # anchor's scores, boxes and landmarks) are decoded on the host (see the README).
    picture = frames * height * width * 3 // 2
    assert picture < transfers.downloaded_bytes < picture * 5
    assert any(line.startswith("host -> device: 1.0 copies, 675 KiB a frame; device -> host: 4.0 copies") for line in lines), lines
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_the_device_detector_finds_what_the_host_detector_finds(example_clip, yunet):
    clip, _ = example_clip
    device = DeviceDetector(yunet, Transfers("cpu"))
    compared = 0
    for index, image in decoded_frames(clip):
        if index % 10:
            continue
        host, moved = yunet.detect(image), device.detect(torch.from_numpy(image))
        assert len(moved) == len(host), index
        if len(host):
            assert iou_matrix(host.boxes, moved.boxes).max(1).min() > 0.9
            compared += len(host)
    assert compared >= 10


def test_a_failed_frame_on_the_device_is_still_covered_whole():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), np.uint8)
    expected = cover_whole_frame(Frame(image, 0, 1, 0)).image
    on_device_frame = Frame(torch.from_numpy(image.copy()), 0, 1, 0, place="device")
    np.testing.assert_array_equal(cover_whole_frame(on_device_frame).image, expected)
    i420 = DownloadStage(Transfers("cpu")).process(on_device_frame).image
    assert i420.shape == (72, 64)
    assert np.abs(cover_whole_frame(Frame(i420, 0, 1, 0, layout="i420")).image.astype(int) - expected).mean() < 3


def test_modes_and_detectors_without_a_device_kernel_are_refused_up_front():
    with pytest.raises(InputError, match="mode solid has no GPU kernel"):
        DeviceObscurer(Options(mode="solid").anonymiser())
    with pytest.raises(InputError, match="detects with yunet"):
        DeviceDetector(make_detector("centerface"), Transfers("cpu"))
    options = Options(mode="blur", frames_on_device=True)
    assert isinstance(stream_anonymiser(options, transfers=Transfers("cpu")), DeviceObscurer)
    with pytest.raises(InputError, match="the face mesh .* runs on the host frame path"):
        build_stages(Options(mode="blur", shape="contour", frames_on_device=True), make_detector("yunet"), 25.0)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["blur", "synth"])
def test_the_device_path_on_cuda_matches_the_shim(example_clip, tmp_path, mode):
    cuda_or_skip()
    clip, _ = example_clip
    detector = make_detector("yunet", backend="torch", device="cuda")
    on_device(clip, tmp_path / "cuda.mp4", detector, device="cuda", mode=mode, backend="torch")
    on_device(clip, tmp_path / "shim.mp4", make_detector("yunet"), mode=mode)
    for (_, a), (_, b) in zip(decoded_frames(tmp_path / "cuda.mp4"), decoded_frames(tmp_path / "shim.mp4"), strict=True):
        assert np.abs(a.astype(int) - b).mean() < 2


def test_the_device_judges_a_frame_dark_as_the_host_does_bars_and_all(yunet):
    """passes.is_dark and the device's own check agree, with and without black bars."""
    from veil.stream.detectors.passes import is_dark

    rng = np.random.default_rng(0)
    bright, dim = rng.integers(60, 200, (720, 405, 3), np.uint8), rng.integers(0, 60, (720, 405, 3), np.uint8)
    device = DeviceDetector(yunet, Transfers("cpu"))
    for picture in (bright, dim):
        for image in (picture, np.pad(picture, ((0, 0), (437, 438), (0, 0))), np.pad(picture, ((90, 90), (0, 0), (0, 0)))):
            assert device._dark(torch.from_numpy(image)) == is_dark(image)
    assert device._dark(torch.zeros((360, 640, 3), dtype=torch.uint8))
