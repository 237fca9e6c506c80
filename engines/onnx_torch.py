"""Run an ONNX graph as a torch module: the PyTorch backend for the ONNX models we ship
(YuNet, CenterFace, SFace, our generator), and SFace as a differentiable loss in training.

onnx2torch would do this, but it imports torchvision, which has no build that works
with CPU-only torch. Our models use a few dozen plain operators, so a small
interpreter that walks the (already topologically sorted) graph is enough; an
operator outside ``OPS`` is refused when the module is built, not at run time.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from veil.errors import InputError


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _same_pads(pads) -> list[int]:
    """ONNX pads (begin..., end...) to F.conv padding; asymmetric pads become an F.pad."""
    half = len(pads) // 2
    return list(pads[:half]) if list(pads[:half]) == list(pads[half:]) else None


def _conv(x, w, b=None, *, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), **_):
    padding = _same_pads(pads)
    if padding is None:
        x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])
        padding = [0, 0]
    return F.conv2d(x, w, b, stride=strides, padding=padding, dilation=dilations, groups=group)


def _conv_transpose(x, w, b=None, *, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), output_padding=(0, 0), **_):
    padding = _same_pads(pads)
    if padding is None:
        raise InputError("ConvTranspose with asymmetric pads is not supported")
    return F.conv_transpose2d(x, w, b, stride=strides, padding=padding, output_padding=output_padding, groups=group, dilation=dilations)


def _batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


def _prelu(x, slope):
    return torch.where(x >= 0, x, x * slope)


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.t() if transA else a
    b = b.t() if transB else b
    y = alpha * (a @ b)
    return y if c is None else y + beta * c


def _max_pool(x, *, kernel_shape, strides=None, pads=(0, 0, 0, 0), ceil_mode=0, **_):
    padding = _same_pads(pads)
    if padding is None:
        x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]], value=float("-inf"))
        padding = [0, 0]
    return F.max_pool2d(x, kernel_shape, strides or kernel_shape, padding, ceil_mode=bool(ceil_mode))


def _resize(x, roi=None, scales=None, sizes=None, *, mode=b"nearest", coordinate_transformation_mode=b"half_pixel", nearest_mode=b"round_prefer_floor", **_):
    mode, transform = mode.decode(), coordinate_transformation_mode.decode()
    if sizes is not None and sizes.numel():
        size = [int(s) for s in sizes[2:]]
        scale = None
    else:
        size, scale = None, [float(s) for s in scales[2:]]
    if mode == "nearest":
        if transform != "asymmetric" or nearest_mode.decode() != "floor":
            raise InputError(f"Resize nearest with {transform}/{nearest_mode.decode()} is not supported")
        return F.interpolate(x, size=size, scale_factor=scale, mode="nearest")
    if mode == "linear" and transform in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        return F.interpolate(x, size=size, scale_factor=scale, mode="bilinear", align_corners=transform == "align_corners")
    raise InputError(f"Resize mode {mode}/{transform} is not supported")


def _reshape(x, shape, *, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(x, *, axis=1):
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _unsqueeze(x, axes):
    for axis in sorted(int(a) for a in axes):
        x = x.unsqueeze(axis)
    return x


def _slice(x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis)] = slice(int(start), min(int(end), x.shape[int(axis)]), int(step))
    return x[tuple(index)]


OPS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": lambda x: F.relu(x),
    "LeakyRelu": lambda x, alpha=0.01: F.leaky_relu(x, alpha),
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": torch.div,
    "MatMul": torch.matmul,
    "Gemm": _gemm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda x, perm: x.permute(*perm),
    "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "MaxPool": _max_pool,
    "Resize": _resize,
    "Identity": lambda x: x,
    "Dropout": lambda x, *_, **__: x,  # inference only
}


class OnnxModule(nn.Module):
    """The graph of one ONNX model; weights are buffers, so ``.to(device)`` moves them."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node} - set(OPS) - {"Constant"})
        if unsupported:
            raise InputError(f"the PyTorch backend cannot run ONNX operators {', '.join(unsupported)}")
        self._names: dict[str, str] = {}
        for initializer in graph.initializer:
            self._constant(initializer.name, numpy_helper.to_array(initializer))
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                self._constant(node.output[0], numpy_helper.to_array(node.attribute[0].t))
            else:
                self.nodes.append((node.op_type, list(node.input), list(node.output), _attrs(node)))
        initialized = set(self._names)
        self.input_names = [i.name for i in graph.input if i.name not in initialized]
        self.output_names = [o.name for o in graph.output]

    def _constant(self, name: str, array: np.ndarray) -> None:
        key = f"c{len(self._names)}"
        self._names[name] = key
        self.register_buffer(key, torch.from_numpy(np.array(array)), persistent=False)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = {name: getattr(self, key) for name, key in self._names.items()}
        values.update(zip(self.input_names, inputs))
        for op, names, outputs, attrs in self.nodes:
            args = [values[n] if n else None for n in names]
            while args and args[-1] is None:
                args.pop()
            values[outputs[0]] = OPS[op](*args, **attrs)
        return tuple(values[n] for n in self.output_names)


def to_torch(model: onnx.ModelProto) -> OnnxModule:
    return OnnxModule(model).eval()
