"""Every copy between host and device, counted; the stages that make the two crossings."""

from __future__ import annotations

import threading

import numpy as np
import torch

from veil.kernels.colour import bgr_to_i420
from veil.stream.elements import Stage
from veil.stream.frame import Frame

GREY_BGR = (0.114, 0.587, 0.299)  # cv2's BGR2GRAY weights


class Transfers:
    """Every copy between host and device goes through here and is counted."""

    def __init__(self, device: str):
        self.device = torch.device(device)
        self._lock = threading.Lock()
        self.uploads = self.downloads = self.uploaded_bytes = self.downloaded_bytes = 0

    def upload(self, array: np.ndarray) -> torch.Tensor:
        with self._lock:
            self.uploads += 1
            self.uploaded_bytes += array.nbytes
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def download(self, tensor: torch.Tensor) -> np.ndarray:
        with self._lock:
            self.downloads += 1
            self.downloaded_bytes += tensor.numel() * tensor.element_size()
        array = tensor.detach().cpu().numpy()
        # From a GPU, .cpu() already made the copy; a CPU tensor would still share memory.
        return array.copy() if tensor.device.type == "cpu" else array


class UploadStage(Stage):
    name = "upload"

    def __init__(self, transfers: Transfers):
        self.transfers = transfers

    def process(self, frame: Frame) -> Frame:
        return frame.replace(image=self.transfers.upload(frame.image), place="device")


class DownloadStage(Stage):
    """Back to the host as I420 (what H.264 and VP8 encoders take): one copy of 1.5 bytes
    a pixel. A frame with an odd side has no 4:2:0 form and comes back as BGR, as every
    frame does for a sink that takes BGR only (``i420=False``: the virtual camera)."""

    name = "download"

    def __init__(self, transfers: Transfers, *, i420: bool = True):
        self.transfers, self.i420 = transfers, i420

    def process(self, frame: Frame) -> Frame:
        image = frame.image
        height, width = image.shape[:2]
        if not self.i420 or height % 2 or width % 2:
            return frame.replace(image=self.transfers.download(image), place="host")
        planes = torch.empty(height * width * 3 // 2, dtype=torch.uint8, device=image.device)
        luma, chroma = height * width, height * width // 4
        bgr_to_i420(image, 601, (planes[:luma].view(height, width),
                                 planes[luma:luma + chroma].view(height // 2, width // 2),
                                 planes[luma + chroma:].view(height // 2, width // 2)))  # fmt: skip
        return frame.replace(image=self.transfers.download(planes).reshape(height * 3 // 2, width), layout="i420", place="host")
