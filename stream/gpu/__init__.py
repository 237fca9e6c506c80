"""The GPU-resident path (``--device cuda``): each frame is uploaded once, detected,
anonymised and converted to YUV 4:2:0 on the device, and comes back once, at half the
bytes of BGR, for the encoder.

The per-pixel work runs in kernels/ (CUDA C): preprocess scales the frame for the
detector and cuts the aligned face crops, warp carries keyframes along the flow,
composite blends every face in one launch, obfuscate pixelates or blurs, colour makes
the I420 the encoder takes. What crosses to the host is small and counted by
``Transfers``: the detector's outputs, 128x128 grey crops per face (DIS measures motion
on the CPU) and their flows coming back, a 64x36 thumbnail for scene cuts.

The path runs on any torch device. On "cpu" the same kernel sources run through the C++
shim (kernels/cuda_shim.h), which is how CI tests it without a GPU.
"""

from veil.stream.gpu.anonymisers import DeviceObscurer, DeviceSynth
from veil.stream.gpu.detector import DeviceDetector
from veil.stream.gpu.transfers import DownloadStage, Transfers, UploadStage

__all__ = ["DeviceDetector", "DeviceObscurer", "DeviceSynth", "DownloadStage", "Transfers", "UploadStage"]
