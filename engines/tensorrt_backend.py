"""TensorRT 10+ engines built from ONNX, cached on disk, run on torch CUDA tensors.

Building an engine takes seconds to minutes, so the serialized engine is kept in the
cache folder under a name made of the GPU (name and compute capability), the TensorRT
version and a hash of the ONNX bytes and build settings: any change of those builds a
new one. One timing cache per GPU and TensorRT version makes rebuilds (a retrained
generator) much faster. Inference binds the torch tensors' device pointers and enqueues
on the current torch stream, so it orders with the rest of the GPU pipeline, no copies.

Written against the TensorRT 10 Python API; TensorRT 11 removed the FP16 builder flag
(its networks are strongly typed), so there the engine keeps the model's own float32.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from pathlib import Path

import onnx

from veil.engines.engine import MAX_BATCH, Engine, Shapes, graph_inputs
from veil.errors import InputError, MissingDependency, StageError

INSTALL_HINT = "pip install tensorrt (TensorRT 10 or newer, for NVIDIA GPUs)"


def import_tensorrt():
    """The tensorrt module, or MissingDependency saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise MissingDependency(f"TensorRT is not installed ({error}): {INSTALL_HINT}") from None
    if int(tensorrt.__version__.split(".")[0]) < 10:
        raise MissingDependency(f"TensorRT {tensorrt.__version__} is too old: {INSTALL_HINT}")
    return tensorrt


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/veil/engines, i.e. ~/.cache/veil/engines unless set otherwise."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "veil" / "engines"


def default_shapes(model: onnx.ModelProto) -> Shapes:
    """Batch 1..MAX_BATCH for inputs whose only dynamic dim is the first; others must be given."""
    shapes = {}
    for tensor in graph_inputs(model):
        dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.type.tensor_type.shape.dim]
        if None not in dims:
            continue
        if None in dims[1:]:
            raise InputError(f"input {tensor.name} has dynamic dims past the batch; give TensorRT shapes= (min, opt, max) for it")
        rest = tuple(dims[1:])
        shapes[tensor.name] = ((1, *rest), (1, *rest), (MAX_BATCH, *rest))
    return shapes


@functools.lru_cache(maxsize=1)
def _logger():
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)  # one logger per process, as TensorRT asks


@functools.lru_cache(maxsize=1)
def _runtime():
    """One runtime for the process: it must outlive every engine it deserialized."""
    return import_tensorrt().Runtime(_logger())


def _gpu_key() -> str:
    """GPU name and compute capability, e.g. NVIDIA-H100-80GB-HBM3-sm90: what an engine is tuned for."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    name = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-")
    return f"{name}-sm{major}{minor}"


def _write_atomic(path: Path, data) -> None:
    """Write via a temporary file so a crash mid-write never leaves a half engine in the cache."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(bytes(data))
    os.replace(temporary, path)


def engine_path(onnx_bytes: bytes, shapes: Shapes, cache_dir: Path) -> Path:
    """Where the engine for these ONNX bytes and shapes on this GPU and TensorRT lives."""
    trt = import_tensorrt()
    settings = json.dumps(sorted(shapes.items())).encode()
    digest = hashlib.sha256(onnx_bytes + settings).hexdigest()[:24]
    return cache_dir / f"{_gpu_key()}-trt{trt.__version__}-{digest}.engine"


def build(onnx_bytes: bytes, shapes: Shapes, timing_cache: Path):
    """A serialized engine: FP16 where the GPU is fast at it and TensorRT allows the flag."""
    trt = import_tensorrt()
    builder = trt.Builder(_logger())
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, _logger())  # holds the weights: alive until the build is done
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StageError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "FP16") and getattr(builder, "platform_has_fast_fp16", False):
        config.set_flag(trt.BuilderFlag.FP16)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, optimum, high) in shapes.items():
            profile.set_shape(name, low, optimum, high)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):  # a corrupt or foreign file
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StageError("TensorRT could not build an engine from the ONNX model (its log above says why)")
    _write_atomic(timing_cache, config.get_timing_cache().serialize())
    return serialized


def load_or_build(model: onnx.ModelProto, shapes: Shapes, cache_dir: Path):
    """(ICudaEngine, path of its cached file), building and caching it if needed."""
    trt = import_tensorrt()
    onnx_bytes = model.SerializeToString()
    path = engine_path(onnx_bytes, shapes, cache_dir)
    runtime = _runtime()
    if path.is_file():
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is not None:
            return engine, path
        path.unlink()  # unreadable (a TensorRT or driver change the key missed): build again
    cache_dir.mkdir(parents=True, exist_ok=True)
    timing_cache = cache_dir / f"{_gpu_key()}-trt{trt.__version__}.timing"
    serialized = build(onnx_bytes, shapes, timing_cache)
    _write_atomic(path, serialized)
    engine = runtime.deserialize_cuda_engine(bytes(serialized))
    if engine is None:
        raise StageError(f"TensorRT could not load the engine it just built ({path})")
    return engine, path


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.INT8: torch.int8,
             trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
    if dtype not in table:
        raise InputError(f"TensorRT tensor type {dtype} has no torch equivalent here")
    return table[dtype]


class TensorRTEngine(Engine):
    """A TensorRT engine on the current CUDA device; runs on the current torch stream."""

    backend = "tensorrt"

    def __init__(self, model: onnx.ModelProto, cache_dir: Path | None = None, shapes: Shapes | None = None):
        trt = import_tensorrt()
        super().__init__(model, "cuda")
        self.shapes = default_shapes(model) if shapes is None else shapes
        unknown = set(self.shapes) - set(self.input_names)
        if unknown:
            raise InputError(f"shapes names {sorted(unknown)}, which are not inputs of the model ({self.input_names})")
        self.engine, self.path = load_or_build(model, self.shapes, Path(cache_dir or default_cache_dir()))
        self.context = self.engine.create_execution_context()
        self._dtypes = {name: _torch_dtype(trt, self.engine.get_tensor_dtype(name)) for name in self.output_names}
        self._lock = threading.Lock()  # one execution context: one run at a time

    def _run_torch(self, inputs):
        import torch

        inputs = [value.contiguous() for value in inputs]
        stream = torch.cuda.current_stream()
        with self._lock:
            for name, value in zip(self.input_names, inputs):
                if not self.context.set_input_shape(name, tuple(value.shape)):
                    raise InputError(f"input {name} of shape {tuple(value.shape)} is outside the engine's range "
                                     f"{self.shapes.get(name)} (min, opt, max)")
                self.context.set_tensor_address(name, value.data_ptr())
            outputs = []
            for name in self.output_names:
                output = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name], device=inputs[0].device)
                self.context.set_tensor_address(name, output.data_ptr())
                outputs.append(output)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise StageError("TensorRT failed to enqueue the engine (its log above says why)")
        return outputs

    def _run_numpy(self, inputs):
        import torch

        outputs = self._run_torch([torch.from_numpy(value).cuda() for value in inputs])
        return [output.cpu().numpy() for output in outputs]
