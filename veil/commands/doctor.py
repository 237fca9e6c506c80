"""`veil doctor`: what this machine can use, so a user sees it before a run fails."""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from veil.engines.runtime import available, check_available, open_engine
from veil.engines.tensorrt_backend import default_cache_dir
from veil.errors import MissingDependency


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def report() -> str:
    import av
    import onnxruntime

    lines = [
        f"python        {platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        f"PyAV          {av.__version__} (FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})",
        "encoders      " + ", ".join(c for c in ("libx264", "libx265", "h264_nvenc", "aac") if c in av.codecs_available),
        f"onnxruntime   {onnxruntime.__version__}; providers: {', '.join(onnxruntime.get_available_providers())}",
        f"opencv        {_version('opencv-python')}",
    ]
    for package in ("torch", "tensorrt", "cupy", "mediapipe"):
        lines.append(f"{package:<13} {_version(package) if importlib.util.find_spec(package) else 'not installed'}")
    if importlib.util.find_spec("torch"):
        import torch

        lines.append(f"cuda          {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    lines.append(f"engines       {_engines_line()}")
    cameras = sorted(p for p in os.listdir("/dev") if p.startswith("video")) if os.path.isdir("/dev") else []
    lines.append(f"cameras       {', '.join('/dev/' + c for c in cameras) or 'none found'}")
    lines.append(f"webrtc        aiortc {_version('aiortc')} (veil serve, -o webrtc://)")
    lines.append(f"virtual cam   {_virtual_camera()}")
    return "\n".join(lines)


def _virtual_camera() -> str:
    """Opens a virtual camera for a moment: the only way pyvirtualcam tells if one exists."""
    from veil.errors import OutputError

    try:
        from veil.stream.io.vcam import VirtualCameraSink

        sink = VirtualCameraSink(640, 480, 30, log=lambda *_: None)
    except (MissingDependency, OutputError) as error:
        return f"none: {error}"
    device = sink.device
    sink.close()
    return f"{device} (veil camera)"


def _engines_line() -> str:
    rows = available()
    usable = [f"{backend}/{device}" for backend, device, why in rows if why is None]
    missing = [f"{backend}/{device}" for backend, device, why in rows if why is not None]
    line = f"usable: {', '.join(usable)}"
    return line + (f"; not here: {', '.join(missing)} (`veil engines` says why)" if missing else "")


def engines_report() -> str:
    """`veil engines`: every backend and device, usable or why not, and the engine cache."""
    lines = [f"{backend + '/' + device:<17} {'usable' if why is None else 'no: ' + why}" for backend, device, why in available()]
    lines.append(f"{'engine cache':<17} {default_cache_dir()} (TensorRT engines and timing caches)")
    return "\n".join(lines)


def build_engines(backend: str, device: str, generator: str | None = None, cache_dir: Path | None = None,
                  log=print) -> None:
    """`veil engines build`: open (and for TensorRT build and cache) every model's engine and
    run it once, so a failure shows now rather than mid-stream and the first run starts warm.

    generator: a generator ONNX file (default: the shipped engines/weights/generator.onnx).
    """
    from veil.engines import GENERATOR_WEIGHTS
    from veil.stream.detectors import DETECTOR_NAMES, make_detector

    check_available(backend, device)
    cache_dir = Path(cache_dir or default_cache_dir())
    log(engines_report())
    path = Path(generator or GENERATOR_WEIGHTS)
    started = time.perf_counter()
    engine = open_engine(path, backend, device, cache_dir=cache_dir)
    opened = time.perf_counter() - started
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal([1 if d is None else d for d in dims]).astype(dtype)
              for name, (dtype, dims) in engine.input_types.items()}
    _timed_run(log, f"generator ({path.name})", engine, opened, lambda: engine.run(inputs))
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
    for name in DETECTOR_NAMES:
        if name == "thorough":
            continue  # YuNet and CenterFace together, each timed here alone
        started = time.perf_counter()
        detector = make_detector(name, backend=backend, device=device)
        _timed_run(log, name, detector.engine, time.perf_counter() - started, lambda d=detector: d.detect(image))


def _timed_run(log, name: str, engine, opened_s: float, run) -> None:
    run()  # the first run pays for lazy initialisation
    started = time.perf_counter()
    run()
    where = f", engine {engine.path}" if hasattr(engine, "path") else ""
    log(f"{name}: {engine.backend}/{engine.device} ready in {opened_s:.1f} s, one run {1000 * (time.perf_counter() - started):.0f} ms{where}")

