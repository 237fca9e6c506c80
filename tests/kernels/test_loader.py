"""The kernel toolchain: every .cu compiles for the GPUs we target, the loader checks
arguments against the C signatures, and the warp kernel matches its reference."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from tests.kernels.devices import DEVICES, back, on
from veil.kernels import loader
from veil.kernels.warp import warp, warp_reference

ARCHITECTURES = ("sm_75", "sm_80", "sm_86", "sm_90")


def nvcc_or_skip() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        if os.environ.get("VEIL_REQUIRE_NVCC") == "1":
            pytest.fail("VEIL_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc is not on PATH (CI sets VEIL_REQUIRE_NVCC=1 and has it)")
    return nvcc


@pytest.mark.parametrize("family", loader.FAMILIES)
def test_every_kernel_file_compiles_with_nvcc_for_each_target_gpu(family, tmp_path):
    nvcc = nvcc_or_skip()
    targets = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHITECTURES]
    result = subprocess.run(
        [nvcc, "--fatbin", "-Werror", "all-warnings", *targets, str(loader.source_path(family)), "-o", str(tmp_path / "k.fatbin")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert loader.signatures(loader.source_path(family).read_text()), f"{family}.cu declares no extern \"C\" kernel"


def test_signatures_are_read_from_the_source():
    params = loader.signatures('extern "C" __global__ void k(const float* __restrict__ a, unsigned char* b, int n, float s) {}')["k"]
    assert [(p.name, p.ctype, p.pointer, p.const) for p in params] == [
        ("a", "float", True, True), ("b", "unsigned char", True, False), ("n", "int", False, False), ("s", "float", False, False),
    ]  # fmt: skip


def test_a_wrong_dtype_or_argument_count_is_refused_before_launch():
    module = loader.load("warp", "cpu")
    src = np.zeros((1, 4, 4, 1), np.float32)
    matrices = np.zeros((1, 2, 3), np.float32)
    out = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(TypeError, match="src must be float32, got float64"):
        module.launch("warp_affine_flow", (1, 1, 1), (4, 4, 1), src.astype(np.float64), 4, 4, 1, matrices, None, out, 1, 4, 4)
    with pytest.raises(TypeError, match="takes 10 arguments"):
        module.launch("warp_affine_flow", (1, 1, 1), (4, 4, 1), src)
    with pytest.raises(ValueError, match="C-contiguous"):
        module.launch("warp_affine_flow", (1, 1, 1), (4, 4, 1), np.zeros((1, 4, 8, 1), np.float32)[:, :, ::2], 4, 4, 1, matrices, None, out, 1, 4, 4)


@pytest.mark.parametrize("device", DEVICES)
def test_warp_matches_remap_with_an_affine_and_a_flow_over_a_batch(device):
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 255, (3, 40, 50, 3)).astype(np.float32)
    angles = rng.uniform(-0.4, 0.4, 3)
    matrices = np.stack([[[np.cos(a) * 1.1, -np.sin(a), 3.0], [np.sin(a), np.cos(a) * 0.9, -2.0]] for a in angles]).astype(np.float32)
    flow = rng.uniform(-3, 3, (3, 30, 35, 2)).astype(np.float32)
    out = back(warp(*on(device, src, matrices, flow)))
    expected = warp_reference(src, matrices, flow)
    assert out.shape == (3, 30, 35, 3)
    np.testing.assert_allclose(out, expected, atol=2e-3)
    assert not np.allclose(out[0], out[1], atol=1), "each face must use its own matrix"


@pytest.mark.parametrize("device", DEVICES)
def test_warp_without_flow_repeats_edge_pixels_outside_the_source(device):
    src = np.arange(2 * 3 * 1, dtype=np.float32).reshape(1, 2, 3, 1) + 1
    shift = np.array([[[1, 0, -5], [0, 1, 0]]], np.float32)  # every sample left of the image
    out = back(warp(*on(device, src, shift), out_size=(2, 4)))
    np.testing.assert_array_equal(out[0, :, :, 0], [[1, 1, 1, 1], [4, 4, 4, 4]])


def test_kernels_launched_from_two_threads_at_once_each_see_their_own_grid():
    """The pipeline's stages launch kernels concurrently; on the CPU shim each launch
    must keep its own thread and block indices."""
    import threading

    rng = np.random.default_rng(5)
    jobs = []
    for size in (157, 211):
        src = rng.uniform(0, 255, (4, size, size, 3)).astype(np.float32)
        matrices = np.tile(np.float32([[0.9, 0.1, 1.0], [-0.1, 0.9, 2.0]]), (4, 1, 1))
        jobs.append((src, matrices, warp_reference(src, matrices)))
    failures = []

    def work(src, matrices, expected):
        for _ in range(10):
            if not np.allclose(warp(src, matrices), expected, atol=2e-3):
                failures.append(src.shape)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
