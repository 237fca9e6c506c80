"""Veil anonymises faces in video, live.

    import veil

    veil.run("talk.mp4", "talk_anon.mp4", mode="blur")          # the whole job, as `veil run` does it

    pipeline = veil.Pipeline("yunet threshold=0.3 ! track ! backfill 0.2 ! pixelate strength=2")
    with veil.open_source("talk.mp4") as source:
        pipeline.run(source, veil.open_sink("talk_anon.mp4", like=source))

The names below are loaded when first used, so ``import veil.errors`` (which every layer
may do) stays light. Layers, each importing only those below it: veil (this API, the CLI,
its commands) -> veil.stream (the pipeline) -> veil.kernels (CUDA kernels) -> veil.engines
(models and their runtimes) -> veil.errors.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_NAMES = {
    "run": "veil.api",
    "open_source": "veil.api",
    "open_sink": "veil.api",
    "Pipeline": "veil.stream.pipeline",
    "Description": "veil.stream.description",
    "Options": "veil.stream.options",
    "Frame": "veil.stream.frame",
    "Faces": "veil.stream.faces",
    "Source": "veil.stream.elements",
    "Stage": "veil.stream.elements",
    "Sink": "veil.stream.elements",
    "RunReport": "veil.stream.graph",
    "VeilError": "veil.errors",
    "InputError": "veil.errors",
    "OutputError": "veil.errors",
    "StageError": "veil.errors",
    "MissingDependency": "veil.errors",
}
__all__ = ["__version__", *_NAMES]


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'veil' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)


def __dir__() -> list[str]:
    return __all__
