"""Run a kernel test on the CPU (the .cu source through kernels/cuda_shim.h) and, on a
machine with CUDA, on the GPU with the same random inputs."""

from __future__ import annotations

import numpy as np
import pytest

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def on(device: str, *arrays):
    """The arrays as the kernels take them on ``device``: numpy, or torch CUDA tensors."""
    if device == "cpu":
        return arrays if len(arrays) > 1 else arrays[0]
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (set VEIL_REQUIRE_GPU=1 to make this a failure)")
    pytest.importorskip("cupy", reason="CuPy is not installed: pip install 'veil[gpu]'")
    moved = tuple(None if a is None else torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in arrays)
    return moved if len(moved) > 1 else moved[0]


def back(array) -> np.ndarray:
    """A kernel's output as numpy, wherever it ran."""
    return array if isinstance(array, np.ndarray) else array.cpu().numpy()
