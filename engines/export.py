"""Torch module -> ONNX file, the form every engine backend loads."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

OPSET = 17  # every backend here runs it: ONNX Runtime, TensorRT 10's parser, veil.engines.onnx_torch


def export_onnx(module, example_inputs: tuple, path: str | Path, input_names: list[str], output_names: list[str],
                dynamic_batch: bool = True) -> Path:
    """Export ``module`` called on ``example_inputs``; with dynamic_batch, dim 0 of every input
    and output is named "batch" so one file serves any number of faces.

    Uses the TorchScript exporter (dynamo=False): it needs no extra packages and handles
    these plain conv nets. The file is checked with onnx.checker before it is returned.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch"} for name in [*input_names, *output_names]} if dynamic_batch else None
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is our choice, said above
            torch.onnx.export(module, tuple(example_inputs), str(path), input_names=input_names, output_names=output_names,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    finally:
        module.train(was_training)
    onnx.checker.check_model(str(path), full_check=True)
    return path
