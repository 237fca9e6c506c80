"""`veil doctor`: what this machine can use, so a user sees it before a run fails."""

from __future__ import annotations

import importlib.util
import os
import platform
from importlib import metadata


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
    cameras = sorted(p for p in os.listdir("/dev") if p.startswith("video")) if os.path.isdir("/dev") else []
    lines.append(f"cameras       {', '.join('/dev/' + c for c in cameras) or 'none found'}")
    lines.append(f"webrtc        aiortc {_version('aiortc')} (veil serve, -o webrtc://)")
    lines.append(f"virtual cam   {_virtual_camera()}")
    return "\n".join(lines)


def _virtual_camera() -> str:
    """Opens a virtual camera for a moment: the only way pyvirtualcam tells if one exists."""
    from stream.errors import MissingDependency, OutputError

    try:
        from stream.vcam import VirtualCameraSink

        sink = VirtualCameraSink(640, 480, 30, log=lambda *_: None)
    except (MissingDependency, OutputError) as error:
        return f"none: {error}"
    device = sink.device
    sink.close()
    return f"{device} (veil camera)"
