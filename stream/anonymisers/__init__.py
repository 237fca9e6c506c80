"""How faces are hidden. The modes, by name, in one place; the run's anonymiser, and the
one each stream gets (synth keeps per-stream state between keyframes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from veil.stream.anonymisers.classic import CLASSIC_MODES, Anonymiser
from veil.stream.anonymisers.propagate import PropagatingSynth

if TYPE_CHECKING:
    from veil.stream.options import Options

MODES = (*CLASSIC_MODES, "synth")  # synth: a generated face of nobody (synth.py)


def make_anonymiser(options: Options):
    """The run's anonymiser for ``options.mode``. Synth pixelates (at this shape, margin
    and strength) the faces it cannot replace."""
    if options.mode != "synth":
        return Anonymiser(mode=options.mode, shape=options.shape, margin=options.margin, strength=options.strength)
    from veil.engines import GENERATOR_WEIGHTS
    from veil.engines.batching import BatchingEngine
    from veil.engines.onnx_models import available_cores
    from veil.engines.runtime import open_engine
    from veil.stream.anonymisers.synth import SynthAnonymiser, generator_uses_mesh

    fallback = Anonymiser(mode="pixelate", shape=options.shape, margin=options.margin, strength=options.strength)
    threads = max(1, available_cores() // 2) if options.live else None
    engine = open_engine(options.generator or GENERATOR_WEIGHTS, options.backend, options.device, intra_op_threads=threads)
    secret = None if options.secret is None else options.secret.encode()
    return SynthAnonymiser(BatchingEngine(engine), secret=secret, fallback=fallback, uses_mesh=generator_uses_mesh(engine))


def stream_anonymiser(options: Options, *, live: bool = False, transfers=None):
    """The anonymiser of one stream: synth propagates keyframes, which takes state per
    stream, so each graph gets its own; live ones never wait for the generator. With
    ``transfers`` (the GPU path) the pixels are done on the device."""
    anonymiser = options.anonymiser()
    if transfers is not None:
        from veil.stream import gpu

        if options.mode != "synth":
            return gpu.DeviceObscurer(anonymiser)
        anonymiser = gpu.DeviceSynth(anonymiser.engine, anonymiser.secret, anonymiser.fallback, transfers)
    if options.mode != "synth" or options.keyframe_every == 1:
        return anonymiser
    return PropagatingSynth(anonymiser, every=options.keyframe_every, wait=not live)
