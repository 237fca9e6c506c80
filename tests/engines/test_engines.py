"""Engine backends: every backend gives the same outputs as ONNX Runtime on random inputs
(never zeros, which hide wrong weights), names nothing silently, and caches TensorRT engines."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from veil.engines import sface
from veil.engines.export import export_onnx
from veil.engines.generator import IN_CHANNELS, LATENT, Generator
from veil.engines.runtime import BACKENDS, available, open_engine
from veil.engines.tensorrt_backend import MAX_BATCH, default_shapes, import_tensorrt
from veil.errors import InputError, MissingDependency
from veil.stream.detectors import centerface, make_detector, yunet
from veil.stream.detectors.passes import LIVE_EDGE_PAD, model_shapes

CROP = 128


def assert_outputs_match(actual: list, expected: list, tolerance: float = 1e-4) -> None:
    """Same count and shapes, and every value within tolerance of the output's own scale."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape
        assert np.abs(want).max() > 0, "a reference output of all zeros proves nothing"
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * max(1.0, float(np.abs(want).max())))


def pixels(rng, shape) -> np.ndarray:
    return rng.uniform(0, 255, shape).astype(np.float32)


@pytest.fixture(scope="module")
def generator() -> Generator:
    """The generator with every weight random, FiLM included (its zero init would hide the latent)."""
    torch.manual_seed(0)
    module = Generator().eval()
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0, 0.1)
                layer.bias.normal_(0, 0.1)
    return module


@pytest.fixture(scope="module")
def generator_onnx(generator, tmp_path_factory):
    example = (torch.randn(2, IN_CHANNELS, CROP, CROP), torch.randn(2, LATENT))
    return export_onnx(generator, example, tmp_path_factory.mktemp("onnx") / "generator.onnx", ["image", "latent"], ["face"])


DETECTOR_MODELS = {"yunet": (yunet.runnable_model, (1, 3, 96, 160)), "centerface": (centerface.runnable_model, (1, 3, 64, 96))}


@pytest.mark.parametrize("name", DETECTOR_MODELS)
def test_torch_backend_matches_onnxruntime_on_the_detector_models(name):
    runnable_model, shape = DETECTOR_MODELS[name]
    reference, engine = open_engine(runnable_model(), "onnxruntime"), open_engine(runnable_model(), "torch")
    inputs = {reference.input_names[0]: pixels(np.random.default_rng(1), shape)}
    assert engine.output_names == reference.output_names
    assert_outputs_match(engine.run(inputs), reference.run(inputs))


def test_torch_backend_matches_onnxruntime_on_sface():
    model = sface.runnable_model()
    reference, engine = open_engine(model, "onnxruntime"), open_engine(model, "torch")
    inputs = {"data": pixels(np.random.default_rng(2), (2, 3, 112, 112))}
    assert_outputs_match(engine.run(inputs), reference.run(inputs))


@pytest.mark.parametrize("batch", [1, 3])
def test_exported_generator_runs_any_batch_and_matches_the_module(generator, generator_onnx, batch):
    rng = np.random.default_rng(batch)
    inputs = {"image": rng.standard_normal((batch, IN_CHANNELS, CROP, CROP)).astype(np.float32),
              "latent": rng.standard_normal((batch, LATENT)).astype(np.float32)}
    with torch.no_grad():
        expected = [generator(torch.from_numpy(inputs["image"]), torch.from_numpy(inputs["latent"])).numpy()]
    for backend in ("onnxruntime", "torch"):
        assert_outputs_match(open_engine(generator_onnx, backend).run(inputs), expected)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_torch_tensors_in_give_torch_tensors_out(generator_onnx, backend):
    engine = open_engine(generator_onnx, backend)
    image, latent = torch.randn(1, IN_CHANNELS, CROP, CROP), torch.randn(1, LATENT)
    (face,) = engine.run({"image": image, "latent": latent})
    assert isinstance(face, torch.Tensor) and face.device.type == "cpu"
    assert_outputs_match([face], engine.run({"image": image.numpy(), "latent": latent.numpy()}))


def test_detector_on_the_torch_backend_finds_the_faces_onnxruntime_finds():
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    expected = make_detector("yunet", input_size=320).detect(image)
    faces = make_detector("yunet", backend="torch", input_size=320).detect(image)
    assert len(expected) == 1 and len(faces) == 1
    np.testing.assert_allclose(faces.boxes, expected.boxes, atol=0.5)


def test_bad_inputs_are_input_errors_that_say_what_was_expected(generator_onnx):
    engine = open_engine(generator_onnx)
    image, latent = np.ones((1, IN_CHANNELS, CROP, CROP), np.float32), np.ones((1, LATENT), np.float32)
    with pytest.raises(InputError, match="latent"):
        engine.run({"image": image})
    with pytest.raises(InputError, match="must be float32, got float64"):
        engine.run({"image": image.astype(np.float64), "latent": latent})
    with pytest.raises(InputError, match=r"\?x9x128x128, got 1x3x128x128"):
        engine.run({"image": image[:, :3], "latent": latent})
    with pytest.raises(InputError, match="not a mix"):
        engine.run({"image": torch.from_numpy(image), "latent": latent})


def test_unknown_backend_or_device_is_an_input_error(generator_onnx):
    with pytest.raises(InputError, match="valid: onnxruntime, torch, tensorrt"):
        open_engine(generator_onnx, "openvino")
    with pytest.raises(InputError, match="valid: cpu, cuda"):
        open_engine(generator_onnx, "torch", "gpu")
    with pytest.raises(InputError, match="cuda only"):
        open_engine(generator_onnx, "tensorrt", "cpu")
    with pytest.raises(InputError, match="not found"):
        open_engine(generator_onnx.with_name("missing.onnx"))
    with pytest.raises(InputError, match="openvino"):
        make_detector("yunet", backend="openvino")


def test_every_backend_is_listed_as_usable_or_with_its_reason():
    rows = available()
    assert {backend for backend, _, _ in rows} == set(BACKENDS)
    assert ("onnxruntime", "cpu", None) in rows and ("torch", "cpu", None) in rows
    assert all(why is None or why for _, _, why in rows)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="this ONNX Runtime has the CUDA provider")
def test_onnxruntime_cuda_without_the_provider_is_a_missing_dependency(generator_onnx):
    with pytest.raises(MissingDependency, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        open_engine(generator_onnx, "onnxruntime", "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_torch_on_cuda_without_a_gpu_is_a_missing_dependency(generator_onnx):
    with pytest.raises(MissingDependency, match="CUDA"):
        open_engine(generator_onnx, "torch", "cuda")


def test_missing_tensorrt_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(MissingDependency, match="pip install tensorrt"):
        import_tensorrt()


def test_tensorrt_profiles_cover_every_batch_and_detector_size(generator_onnx):
    import onnx

    assert default_shapes(onnx.load(generator_onnx)) == {
        "image": ((1, 9, 128, 128), (1, 9, 128, 128), (MAX_BATCH, 9, 128, 128)),
        "latent": ((1, 64), (1, 64), (MAX_BATCH, 64)),
    }
    with pytest.raises(InputError, match="shapes="):
        default_shapes(centerface.runnable_model())
    low, _, high = model_shapes(960, tiles=False, edge_pad=0.0)
    assert low == (1, 3, 32, 32) and high == (1, 3, 960, 960)
    assert model_shapes(320, tiles=True, edge_pad=0.0)[2] == (1, 3, 640, 640)
    assert model_shapes(960, tiles=False, edge_pad=LIVE_EDGE_PAD)[2] == (1, 3, 1088, 1088)  # 960 * 1.12, padded
    assert model_shapes(None, tiles=False, edge_pad=0.0)[2][2] >= 3840  # native UHD


def veil(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "veil", *args], check=False, capture_output=True, text=True, timeout=120)


def test_veil_engines_lists_the_backends_and_the_cache():
    result = veil("engines")
    assert result.returncode == 0, result.stderr
    assert "onnxruntime/cpu   usable" in result.stdout and "tensorrt/cuda" in result.stdout
    assert "engine cache" in result.stdout


def test_veil_engines_build_loads_and_runs_every_model(tmp_path):
    result = veil("engines", "build", "--backend", "onnxruntime", "--cache", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("generator (generator.onnx): onnxruntime/cpu", "yunet: onnxruntime/cpu", "centerface: onnxruntime/cpu"):
        assert name in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_veil_engines_build_on_a_missing_backend_is_a_one_line_error():
    result = veil("engines", "build", "--backend", "tensorrt")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "tensorrt" in result.stderr.lower()


def cuda_or_skip() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (set VEIL_REQUIRE_GPU=1 to make this a failure)")


@pytest.mark.gpu
def test_torch_backend_on_cuda_matches_onnxruntime_and_stays_on_the_device(generator_onnx):
    cuda_or_skip()
    engine, reference = open_engine(generator_onnx, "torch", "cuda"), open_engine(generator_onnx)
    image, latent = torch.randn(2, IN_CHANNELS, CROP, CROP), torch.randn(2, LATENT)
    (face,) = engine.run({"image": image.cuda(), "latent": latent.cuda()})
    assert face.device.type == "cuda"
    expected = reference.run({"image": image.numpy(), "latent": latent.numpy()})
    assert_outputs_match([face.cpu()], expected, tolerance=1e-3)  # TF32 convolutions
    with pytest.raises(InputError, match="on cpu"):
        engine.run({"image": image, "latent": latent})


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime_and_reuses_its_cached_engine(generator_onnx, tmp_path, monkeypatch):
    cuda_or_skip()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))  # the detectors' engines go there
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed (set VEIL_REQUIRE_GPU=1 to make this a failure)")
    reference = open_engine(generator_onnx)
    engine = open_engine(generator_onnx, "tensorrt", "cuda", cache_dir=tmp_path)
    rng = np.random.default_rng(3)
    for batch in (1, 3):
        inputs = {"image": rng.standard_normal((batch, IN_CHANNELS, CROP, CROP)).astype(np.float32),
                  "latent": rng.standard_normal((batch, LATENT)).astype(np.float32)}
        (face,) = engine.run({name: torch.from_numpy(value).cuda() for name, value in inputs.items()})
        assert face.device.type == "cuda"
        assert_outputs_match([face.cpu()], reference.run(inputs), tolerance=2e-2)  # FP16 kernels
    built = engine.path.stat().st_mtime_ns
    again = open_engine(generator_onnx, "tensorrt", "cuda", cache_dir=tmp_path)
    assert again.path == engine.path and again.path.stat().st_mtime_ns == built
    assert list(tmp_path.glob("*.timing"))
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    for name in DETECTOR_MODELS:
        faces = make_detector(name, backend="tensorrt", device="cuda").detect(image)
        expected = make_detector(name).detect(image)
        assert len(faces) == len(expected) >= 1
        np.testing.assert_allclose(faces.boxes, expected.boxes, atol=3.0)
