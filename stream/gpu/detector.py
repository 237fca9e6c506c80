"""Detection of a frame on the device: scaled there, run there, only the outputs come back."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from veil.errors import InputError
from veil.kernels.preprocess import detector_input
from veil.stream.detectors.passes import BAR_LUMA, DARK_MEAN_LUMA, PAD_MULTIPLE, mapped, merge_overlapping, nms, pass_sizes
from veil.stream.detectors.yunet import YuNet, decode
from veil.stream.faces import Faces
from veil.stream.gpu.transfers import GREY_BGR, Transfers


class DeviceDetector:
    """YuNet on a frame on the device: scaled there by the preprocess kernel and run by an
    engine on the same device; only its outputs come back. What the device does not do
    (the contrast boost of a dark frame, tiles, edge padding) runs on the host detector
    after one more, counted, download: detection is never weakened."""

    def __init__(self, detector, transfers: Transfers):
        if not isinstance(detector, YuNet):
            raise InputError("the GPU path detects with yunet only; choose it or run on the cpu device")
        self.host, self.transfers = detector, transfers

    def detect(self, image: torch.Tensor) -> Faces:
        host = self.host
        if host.tiles or host.edge_pad or self._dark(image):
            return host.detect(self.transfers.download(image))
        height, width = image.shape[:2]
        passes = [mapped(self._native(detector_input(image, *size)), size[0] / width, size[1] / height)
                  for size in pass_sizes(host.input_size, height, width)]
        faces = passes[0] if len(passes) == 1 else merge_overlapping(Faces.concat(passes), host.nms_threshold)
        return faces.clipped(width, height)

    def _dark(self, image: torch.Tensor) -> bool:
        """passes.is_dark on the device: the mean grey of the picture between any black bars,
        with one 4-byte copy down."""
        grey = image[::8, ::8].float() @ torch.tensor(GREY_BGR, device=image.device)
        rows, columns = grey.amax(dim=1) > BAR_LUMA, grey.amax(dim=0) > BAR_LUMA
        between = [(lit.cumsum(0) > 0) & (lit.flip(0).cumsum(0).flip(0) > 0) for lit in (rows, columns)]
        picture = (between[0][:, None] & between[1][None, :]).float()
        area = picture.sum()
        mean = torch.where(area > 0, (grey * picture).sum() / area.clamp(min=1), grey.mean())
        return float(self.transfers.download(mean)) < DARK_MEAN_LUMA

    def _native(self, blob: torch.Tensor) -> Faces:
        """YuNet's own pass on a 1x3xHxW input: padded to a multiple of 32 with zeros."""
        height, width = blob.shape[2:]
        blob = F.pad(blob, (0, -width % PAD_MULTIPLE, 0, -height % PAD_MULTIPLE)).contiguous()
        outputs = self.host.engine.run({self.host.input_name: blob})
        flat = self.transfers.download(torch.cat([value.reshape(-1).float() for value in outputs]))  # one copy
        ends = np.cumsum([value.numel() for value in outputs])
        outputs = {name: part.reshape(value.shape) for name, value, part in zip(self.host.output_names, outputs, np.split(flat, ends[:-1]))}
        boxes, scores, landmarks = decode(outputs, blob.shape[2], blob.shape[3], self.host.score_threshold)
        keep = nms(boxes, scores, self.host.nms_threshold)
        return Faces.from_boxes(boxes[keep], scores=scores[keep], landmarks=landmarks[keep])
