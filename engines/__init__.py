"""Neural models and what runs them: the synth generator, its training and export, and one
engine interface over ONNX Runtime, PyTorch and TensorRT (``runtime.open_engine``)."""

from pathlib import Path

GENERATOR_WEIGHTS = Path(__file__).with_name("weights") / "generator.onnx"  # the shipped generator (MODEL_CARD.md)
MEDIAPIPE_WEIGHTS = Path(__file__).with_name("weights") / "mediapipe"  # BlazeFace and the face mesh (MODEL_CARD.md there)
