"""The engine interface every backend implements (veil.engines.runtime opens one): inputs
by name in, outputs in graph order out, checked the same way on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from veil.errors import InputError

# The largest batch a caller may give an engine with a free batch size: TensorRT builds
# its profile up to it, and callers with more faces split them into several calls.
MAX_BATCH = 16

# (min, opt, max) shape of each input, for engines that are built for a range of shapes
Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def as_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """The ModelProto itself, or the one in the file; a missing file is an InputError."""
    if isinstance(model, onnx.ModelProto):
        return model
    if not Path(model).is_file():
        raise InputError(f"ONNX model not found: {model}")
    return onnx.load(str(model))


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: old exporters also list every initializer as an input."""
    constants = {init.name for init in model.graph.initializer}
    return [tensor for tensor in model.graph.input if tensor.name not in constants]


def _is_torch(value) -> bool:
    return type(value).__module__.startswith("torch")


class Engine:
    """A loaded model on one backend and device.

    Subclasses implement ``_run_numpy`` and ``_run_torch`` (inputs in graph order); this
    class checks names, dtypes and fixed dims first, so every backend rejects bad input
    with the same InputError instead of its own kind of exception.
    """

    backend = ""

    def __init__(self, model: onnx.ModelProto, device: str):
        self.device = device
        inputs = graph_inputs(model)
        self.input_names = [tensor.name for tensor in inputs]
        self.output_names = [tensor.name for tensor in model.graph.output]
        # name -> (numpy dtype name, dims with None where dynamic), as the graph declares them
        self.input_types = {tensor.name: _declared(tensor) for tensor in inputs}

    def run(self, inputs: dict) -> list:
        """Outputs in graph order; numpy in -> numpy out, torch in -> torch out on this device."""
        if set(inputs) != set(self.input_names):
            raise InputError(f"{self.backend} engine takes inputs {self.input_names}, got {sorted(inputs)}")
        ordered = [inputs[name] for name in self.input_names]
        for name, value in zip(self.input_names, ordered):
            self._check(name, value)
        if all(isinstance(value, np.ndarray) for value in ordered):
            return self._run_numpy(ordered)
        if all(_is_torch(value) for value in ordered):
            return self._run_torch(ordered)
        raise InputError("give the engine all numpy arrays or all torch tensors, not a mix")

    def _check(self, name: str, value) -> None:
        dtype, dims = self.input_types[name]
        if not isinstance(value, np.ndarray) and not _is_torch(value):
            raise InputError(f"input {name} must be a numpy array or torch tensor, got {type(value).__name__}")
        if _is_torch(value):
            if value.device.type != self.device:
                raise InputError(f"input {name} is on {value.device}, this engine runs on {self.device}")
            actual = str(value.dtype).removeprefix("torch.")
        else:
            actual = str(value.dtype)
        if actual != dtype:
            raise InputError(f"input {name} must be {dtype}, got {actual}")
        shape = tuple(value.shape)
        if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
            expected = "x".join("?" if d is None else str(d) for d in dims)
            raise InputError(f"input {name} must have shape {expected}, got {'x'.join(map(str, shape)) or 'a scalar'}")

    def _run_numpy(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _run_torch(self, inputs: list) -> list:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend}/{self.device} inputs={self.input_names}>"


def _declared(tensor: onnx.ValueInfoProto) -> tuple[str, list[int | None]]:
    """(numpy dtype name, dims with None where symbolic) of a graph input."""
    tensor_type = tensor.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
    return dtype, dims
