"""Compile a kernels/*.cu file and launch its kernels, on the GPU or on the CPU.

``load(family, "cuda")`` compiles the source at run time with NVRTC (CuPy's
``RawModule``) and launches on torch's current CUDA stream, with torch tensors passed
zero-copy through ``__cuda_array_interface__``. ``load(family, "cpu")`` compiles the
very same source as C++ through ``cuda_shim.h`` and runs every thread of the grid in
turn: that is how CI, which has no GPU, executes the kernels against their references.

Both check each argument against the kernel's C signature (pointer element types,
contiguity, int and float scalars), so a wrong dtype fails loudly instead of reading
garbage.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from veil.errors import MissingDependency

HERE = Path(__file__).resolve().parent
SHIM = HERE / "cuda_shim.h"
FAMILIES = ("warp", "composite", "obfuscate", "colour", "preprocess")

# C element type of a pointer parameter -> the dtype its array must have.
POINTER_DTYPES = {
    "float": np.float32,
    "unsigned char": np.uint8,
    "int": np.int32,
}
SCALAR_TYPES = {"int": ("int", ctypes.c_int, np.int32), "float": ("float", ctypes.c_float, np.float32)}

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.DOTALL)
_PARAM = re.compile(r"^(const\s+)?(unsigned char|float|int)\s*(\*?)\s*(?:__restrict__\s+)?(\w+)$")


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # float, int or unsigned char
    pointer: bool
    const: bool

    def declaration(self) -> str:
        return f"{'const ' if self.const else ''}{self.ctype}{'*' if self.pointer else ''} {self.name}"


def source_path(family: str) -> Path:
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family '{family}'; choose one of {', '.join(FAMILIES)}")
    return HERE / f"{family}.cu"


def signatures(source: str) -> dict[str, list[Param]]:
    """Every ``extern "C" __global__`` kernel in ``source`` with its parameters."""
    kernels = {}
    for name, params in _KERNEL.findall(source):
        parsed = []
        for text in (p.strip() for p in params.split(",") if p.strip()):
            match = _PARAM.match(" ".join(text.split()))
            if match is None:
                raise ValueError(f"kernel {name}: parameter '{text}' is not one of float/int/unsigned char, scalar or pointer")
            const, ctype, star, pname = match.groups()
            parsed.append(Param(pname, ctype, bool(star), bool(const)))
        kernels[name] = parsed
    return kernels


def grid_for(total: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    """The number of blocks along each axis that covers ``total`` threads."""
    return tuple(max(1, -(-int(t) // int(b))) for t, b in zip(total, block, strict=True))


class Module:
    """The kernels of one .cu file; ``launch(name, grid, block, *args)`` runs one."""

    def __init__(self, family: str, device: str):
        self.family, self.device = family, device
        self.source = source_path(family).read_text()
        self.kernels = signatures(self.source)

    def _checked(self, name: str, args: tuple) -> list:
        if name not in self.kernels:
            raise ValueError(f"{self.family}.cu has no kernel '{name}'")
        params = self.kernels[name]
        if len(args) != len(params):
            raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
        checked = []
        for param, arg in zip(params, args):
            if param.pointer:
                if arg is None:
                    checked.append(None)
                    continue
                dtype = np.dtype(POINTER_DTYPES[param.ctype])
                if _dtype(arg) != dtype:
                    raise TypeError(f"{name}: {param.name} must be {dtype}, got {_dtype(arg)}")
                if not _contiguous(arg):
                    raise ValueError(f"{name}: {param.name} must be C-contiguous")
                checked.append(arg)
            else:
                if isinstance(arg, bool) or not isinstance(arg, (int, float, np.integer, np.floating)):
                    raise TypeError(f"{name}: {param.name} must be a {param.ctype}, got {type(arg).__name__}")
                checked.append(SCALAR_TYPES[param.ctype][2](arg))
        return checked


def _dtype(array) -> np.dtype:
    dtype = array.dtype
    if not isinstance(dtype, np.dtype):  # a torch dtype
        import torch

        dtype = torch.empty((), dtype=dtype).numpy().dtype
    return np.dtype(dtype)


def _contiguous(array) -> bool:
    flags = getattr(array, "flags", None)
    return bool(flags["C_CONTIGUOUS"]) if flags is not None else bool(array.is_contiguous())


# ---------------------------------------------------------------- CPU, through the shim


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "veil" / "kernels"


class CpuModule(Module):
    """The .cu source compiled by the host C++ compiler; numpy arrays in, in place."""

    def __init__(self, family: str):
        super().__init__(family, "cpu")
        self.library = ctypes.CDLL(str(self._build()))
        for name, params in self.kernels.items():
            function = getattr(self.library, f"launch_{name}")
            function.restype = None
            function.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p if p.pointer else SCALAR_TYPES[p.ctype][1] for p in params]

    def _launchers(self) -> str:
        lines = [f'#include "{SHIM}"', f'#include "{source_path(self.family)}"']
        for name, params in self.kernels.items():
            lines += [
                f'extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz'
                + "".join(f", {p.declaration()}" for p in params) + ") {",
                "    gridDim = {gx, gy, gz}; blockDim = {bx, by, bz};",
                "    for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x) {",
                "        blockIdx = {x, y, z};",
                "        for (unsigned tz = 0; tz < bz; ++tz) for (unsigned ty = 0; ty < by; ++ty) for (unsigned tx = 0; tx < bx; ++tx) {",
                "            threadIdx = {tx, ty, tz};",
                f"            {name}({', '.join(p.name for p in params)});",
                "        }",
                "    }",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def _build(self) -> Path:
        compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
        if compiler is None:
            raise MissingDependency("running kernels on the CPU needs a C++ compiler (c++ or g++ on PATH)")
        program = self._launchers()
        key = hashlib.sha256((program + self.source + SHIM.read_text()).encode()).hexdigest()[:16]
        library = _cache_dir() / f"{self.family}-{key}.so"
        if library.exists():
            return library
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            launcher = Path(tmp) / f"{self.family}.cpp"
            launcher.write_text(program)
            built = Path(tmp) / library.name
            result = subprocess.run(
                [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-o", str(built), str(launcher)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode:
                raise RuntimeError(f"compiling {self.family}.cu for the CPU failed:\n{result.stderr}")
            os.replace(built, library)  # atomic: a parallel run never loads half a file
        return library

    def launch(self, name: str, grid: tuple, block: tuple, *args) -> None:
        checked = self._checked(name, args)
        grid3, block3 = (tuple(grid) + (1, 1))[:3], (tuple(block) + (1, 1))[:3]
        values = [None if a is None else _host(a).ctypes.data if _is_array(a) else a.item() for a in checked]
        getattr(self.library, f"launch_{name}")(*grid3, *block3, *values)


# ---------------------------------------------------------------- GPU, through CuPy


class CudaModule(Module):
    """The .cu source compiled by NVRTC; torch CUDA tensors in, on torch's current stream."""

    def __init__(self, family: str):
        super().__init__(family, "cuda")
        try:
            import cupy
        except ImportError as error:
            raise MissingDependency(f"the CUDA kernels need CuPy: pip install 'veil[gpu]' ({error})") from None
        self._cupy = cupy
        self.raw = cupy.RawModule(code=self.source, options=("--std=c++17",))
        self.functions = {name: self.raw.get_function(name) for name in self.kernels}

    def launch(self, name: str, grid: tuple, block: tuple, *args) -> None:
        import torch

        cupy = self._cupy
        checked = self._checked(name, args)
        values = []
        for arg in checked:
            if arg is None:
                values.append(np.uint64(0))  # a null pointer
            elif isinstance(arg, torch.Tensor):
                if not arg.is_cuda:
                    raise ValueError(f"{name}: tensors must be on the GPU, got one on {arg.device}")
                values.append(cupy.asarray(arg))  # zero-copy through __cuda_array_interface__
            else:
                values.append(arg)
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        with stream:
            self.functions[name](tuple(grid), tuple(block), tuple(values))


@functools.cache
def load(family: str, device: str = "cuda") -> Module:
    """The compiled kernels of ``family`` for ``device`` ("cuda" or "cpu"), built once per process."""
    if device == "cpu":
        return CpuModule(family)
    if device == "cuda":
        return CudaModule(family)
    raise ValueError(f"kernels run on 'cuda' or 'cpu', not '{device}'")


def _is_array(value) -> bool:
    return not isinstance(value, np.generic) and hasattr(value, "shape")  # numpy scalars have shapes too


def _host(array) -> np.ndarray:
    """A numpy view of a host array: a torch CPU tensor shares its memory, so the shim's
    writes land in the tensor."""
    return array if isinstance(array, np.ndarray) else array.numpy()


def on_gpu(array) -> bool:
    return not isinstance(array, np.ndarray) and array.device.type == "cuda"


def module_for(family: str, array) -> Module:
    """The kernels of ``family`` where ``array`` lives: a torch CUDA tensor runs them on
    its GPU; numpy arrays and torch CPU tensors on the CPU, through the shim (which is
    how the GPU path is tested without a GPU)."""
    return load(family, "cuda" if on_gpu(array) else "cpu")


def empty(like, shape: tuple, dtype) -> object:
    """An uninitialised array beside ``like``: numpy for numpy, torch on its device for torch."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype)
    import torch

    return torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=like.device)


def beside(like, array):
    """A small host ``array`` (per-face matrices, regions) where ``like`` lives: numpy stays
    numpy, torch goes to ``like``'s device."""
    if isinstance(like, np.ndarray):
        return np.ascontiguousarray(array)
    import torch

    if isinstance(array, torch.Tensor):
        return array.to(like.device).contiguous()
    return torch.as_tensor(np.ascontiguousarray(array), device=like.device)
