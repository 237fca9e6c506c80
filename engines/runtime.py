"""One interface to run an ONNX model on ONNX Runtime, PyTorch or TensorRT.

``open_engine(model, backend, device)`` gives an ``Engine`` whose ``run`` takes a dict of
inputs by name and returns the outputs in graph order: numpy in gives numpy out on every
backend; torch tensors in give torch tensors out on the engine's device, so a GPU pipeline
never leaves the device. A backend or device that cannot run here raises
``MissingDependency`` with the reason; nothing falls back to another one silently.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import onnx

from veil.engines.engine import Engine, Shapes, as_model
from veil.errors import InputError, MissingDependency

BACKENDS = ("onnxruntime", "torch", "tensorrt")
DEVICES = ("cpu", "cuda")
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
TORCH_HINT = "pip install torch (CUDA builds for GPUs: https://pytorch.org)"


class OnnxRuntimeEngine(Engine):
    """ONNX Runtime on exactly one provider; CUDA tensors go through IOBinding, no host copy."""

    backend = "onnxruntime"

    def __init__(self, model: onnx.ModelProto, device: str, intra_op_threads: int | None):
        from veil.engines.onnx_models import load_session

        super().__init__(model, device)
        self.session = load_session(model, (ORT_PROVIDERS[device],), intra_op_threads)
        self._output_types = {out.name: out.type for out in self.session.get_outputs()}

    def _run_numpy(self, inputs):
        return self.session.run(self.output_names, dict(zip(self.input_names, inputs)))

    def _run_torch(self, inputs):
        import torch

        if self.device == "cpu":
            outputs = self._run_numpy([value.detach().numpy() for value in inputs])
            return [torch.from_numpy(output) for output in outputs]
        binding = self.session.io_binding()
        inputs = [value.contiguous() for value in inputs]
        for name, value in zip(self.input_names, inputs):
            dtype = np.dtype(str(value.dtype).removeprefix("torch.")).type
            binding.bind_input(name, "cuda", value.device.index or 0, dtype, tuple(value.shape), value.data_ptr())
        for name in self.output_names:  # ORT allocates: output shapes are known only after the run
            binding.bind_output(name, "cuda", inputs[0].device.index or 0)
        # ORT runs on its own CUDA stream: wait for torch's work on the inputs, then for ORT's
        torch.cuda.current_stream().synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return [_torch_copy(value, self._output_types[name], inputs[0].device)
                for name, value in zip(self.output_names, binding.get_outputs())]


def _torch_copy(ortvalue, onnx_type: str, device):
    """A torch tensor holding a copy of an ORT CUDA output (ORT may reuse its buffer later)."""
    import torch

    numpy_type = {"tensor(float)": "<f4", "tensor(float16)": "<f2", "tensor(int64)": "<i8",
                  "tensor(int32)": "<i4", "tensor(uint8)": "|u1", "tensor(int8)": "|i1", "tensor(bool)": "|b1"}
    if onnx_type not in numpy_type:
        raise InputError(f"ONNX Runtime CUDA outputs of type {onnx_type} are not supported")

    view = types.SimpleNamespace(__cuda_array_interface__={  # how torch reads a foreign CUDA buffer
        "shape": tuple(ortvalue.shape()), "typestr": numpy_type[onnx_type], "data": (ortvalue.data_ptr(), False), "version": 3,
    })
    return torch.as_tensor(view, device=device).clone()


class TorchEngine(Engine):
    """The ONNX graph as a torch module (veil.engines.onnx_torch): runs wherever torch runs."""

    backend = "torch"

    def __init__(self, model: onnx.ModelProto, device: str, intra_op_threads: int | None):
        import torch

        from veil.engines.onnx_torch import to_torch

        super().__init__(model, device)
        if intra_op_threads is not None:
            if intra_op_threads < 1:
                raise InputError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
            torch.set_num_threads(intra_op_threads)  # process-wide: torch has no per-module setting
        self.module = to_torch(model).eval().to(device)

    def _run_torch(self, inputs):
        import torch

        with torch.inference_mode():
            outputs = self.module(*inputs)
        return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]

    def _run_numpy(self, inputs):
        import torch

        outputs = self._run_torch([torch.from_numpy(np.ascontiguousarray(value)).to(self.device) for value in inputs])
        return [output.cpu().numpy() for output in outputs]


def check_available(backend: str, device: str) -> None:
    """Raise InputError for an unknown name, MissingDependency (with the reason) if it can't run here."""
    if backend not in BACKENDS:
        raise InputError(f"unknown engine backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise InputError(f"unknown engine device {device!r}; valid: {', '.join(DEVICES)}")
    if backend == "tensorrt" and device != "cuda":
        raise InputError("the tensorrt backend runs on cuda only; use onnxruntime or torch for cpu")
    if backend == "onnxruntime":
        import onnxruntime

        if ORT_PROVIDERS[device] not in onnxruntime.get_available_providers():
            raise MissingDependency(
                f"ONNX Runtime here has no {ORT_PROVIDERS[device]} (it has "
                f"{', '.join(onnxruntime.get_available_providers())}); install onnxruntime-gpu in place of onnxruntime"
            )
        return
    if backend == "tensorrt":
        from veil.engines.tensorrt_backend import import_tensorrt

        import_tensorrt()
    if importlib.util.find_spec("torch") is None:
        raise MissingDependency(f"the {backend} backend needs PyTorch: {TORCH_HINT}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MissingDependency(f"the {backend} backend on cuda needs a CUDA GPU and a CUDA build of torch; none here")


def available() -> list[tuple[str, str, str | None]]:
    """(backend, device, why not or None) for every combination that makes sense."""
    rows = []
    for backend in BACKENDS:
        for device in ("cuda",) if backend == "tensorrt" else DEVICES:
            try:
                check_available(backend, device)
                rows.append((backend, device, None))
            except MissingDependency as error:
                rows.append((backend, device, str(error)))
    return rows


def open_engine(model: str | Path | onnx.ModelProto, backend: str = "onnxruntime", device: str = "cpu", *,
                intra_op_threads: int | None = None, cache_dir: Path | None = None,
                shapes: Shapes | None = None) -> Engine:
    """An Engine for ``model`` on exactly ``backend`` and ``device``.

    intra_op_threads: CPU threads for one operator (onnxruntime; torch sets it process-wide).
    cache_dir, shapes: TensorRT only: where built engines are kept, and the (min, opt, max)
      shape of each input with dynamic dims (by default batch 1..16, see tensorrt_backend).
    """
    check_available(backend, device)
    model = as_model(model)
    if backend == "onnxruntime":
        return OnnxRuntimeEngine(model, device, intra_op_threads)
    if backend == "torch":
        return TorchEngine(model, device, intra_op_threads)
    from veil.engines.tensorrt_backend import TensorRTEngine

    return TensorRTEngine(model, cache_dir=cache_dir, shapes=shapes)
