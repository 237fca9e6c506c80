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

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from veil.engines import align
from veil.kernels.colour import bgr_to_i420
from veil.kernels.composite import composite
from veil.kernels.loader import beside
from veil.kernels.obfuscate import obscure
from veil.kernels.preprocess import detector_input, preprocess
from veil.kernels.warp import warp
from veil.stream.anonymisers.classic import Anonymiser
from veil.stream.detectors.passes import DARK_MEAN_LUMA, PAD_MULTIPLE, mapped, merge_overlapping, nms
from veil.stream.detectors.yunet import YuNet, decode
from veil.errors import InputError
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.anonymisers.synth import AlignedFace, SynthAnonymiser

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


class UploadStage:
    name = "upload"

    def __init__(self, transfers: Transfers):
        self.transfers = transfers

    def process(self, frame: Frame) -> Frame:
        return frame.replace(image=self.transfers.upload(frame.image))


class DownloadStage:
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
            return frame.replace(image=self.transfers.download(image))
        planes = torch.empty(height * width * 3 // 2, dtype=torch.uint8, device=image.device)
        luma, chroma = height * width, height * width // 4
        bgr_to_i420(image, 601, (planes[:luma].view(height, width),
                                 planes[luma:luma + chroma].view(height // 2, width // 2),
                                 planes[luma + chroma:].view(height // 2, width // 2)))  # fmt: skip
        return frame.replace(image=self.transfers.download(planes).reshape(height * 3 // 2, width))


class DeviceDetector:
    """YuNet on a frame on the device: scaled there by the preprocess kernel and run by an
    engine on the same device; only its outputs come back. What the device does not do
    (the contrast boost of a dark frame, tiles, edge padding) runs on the host detector
    after one more, counted, download: detection is never weakened."""

    def __init__(self, detector, transfers: Transfers):
        if not isinstance(detector, YuNet):
            raise InputError("the GPU path detects with yunet; use --detector yunet or --device cpu")
        self.host, self.transfers = detector, transfers

    def detect(self, image: torch.Tensor) -> Faces:
        host = self.host
        if host.tiles or host.edge_pad or self._dark(image):
            return host.detect(self.transfers.download(image))
        height, width = image.shape[:2]
        longest = max(height, width)
        passes = []
        if host.input_size is not None and host.input_size != longest:
            scale = host.input_size / longest
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            passes.append(mapped(self._native(detector_input(image, *size)), size[0] / width, size[1] / height))
        if host.input_size is None or longest <= host.input_size:
            passes.append(self._native(detector_input(image, width, height)))
        faces = passes[0] if len(passes) == 1 else merge_overlapping(Faces.concat(passes), host.nms_threshold)
        return faces.clipped(width, height)

    def _dark(self, image: torch.Tensor) -> bool:
        sample = image[::8, ::8].float() @ torch.tensor(GREY_BGR, device=image.device)
        return float(self.transfers.download(sample.mean())) < DARK_MEAN_LUMA

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


class DeviceObscurer:
    """Blur or pixelate every face of a frame on the device (kernels/obfuscate.cu)."""

    def __init__(self, anonymiser: Anonymiser):
        if anonymiser.mode not in ("blur", "pixelate"):
            raise InputError(f"--mode {anonymiser.mode} has no GPU kernel; use blur, pixelate or synth, or --device cpu")
        self.anonymiser = anonymiser

    def apply(self, image: torch.Tensor, faces: Faces) -> torch.Tensor:
        return obscure(image, faces.boxes, self.anonymiser)


class DeviceSynth(SynthAnonymiser):
    """Synth (and, wrapped in ``PropagatingSynth``, its keyframe policy) with the pixels on
    the device: crops cut by the preprocess kernel, the generator fed and read there,
    faces warped, colour matched and composited there."""

    def __init__(self, engine, secret: bytes, fallback: Anonymiser, transfers: Transfers):
        super().__init__(engine, secret, fallback)
        self.transfers = transfers
        to_device = transfers.upload  # constants: once per run
        self._mask, self._alpha = to_device(align.FACE_MASK), to_device(align.BLEND_ALPHA)
        self._ring = to_device(align.COLOUR_RING)
        self._grid = to_device(np.stack([align.CENTRES_Y, align.CENTRES_X]))  # the heatmaps' pixel centres, as align.heatmaps

    def crops(self, image: torch.Tensor, matrices: list[np.ndarray]) -> list:
        """Float BGR SIZExSIZEx3 crops, as align.crop cuts them (without its rounding)."""
        if not matrices:
            return []
        inverses = np.stack([cv2.invertAffineTransform(m) for m in matrices]).astype(np.float32)
        batch = preprocess(image, inverses, (align.SIZE, align.SIZE), 1.0, 0.0, False)
        return list(batch.permute(0, 2, 3, 1))

    def greys(self, crops: list) -> list[np.ndarray]:
        if not crops:
            return []
        grey = (torch.stack(crops) @ torch.tensor(GREY_BGR, device=crops[0].device)).round().clamp(0, 255).to(torch.uint8)
        return list(self.transfers.download(grey))  # every face of the frame in one copy

    def network_inputs(self, faces: list[AlignedFace]) -> torch.Tensor:
        crops = torch.stack([face.crop for face in faces])
        rgb = (crops.flip(-1).permute(0, 3, 1, 2) / 127.5 - 1) * (1 - self._mask)
        points = self.transfers.upload(np.stack([face.points for face in faces]).astype(np.float32))  # N x 5 x 2
        d2 = (self._grid[1][None, None] - points[:, :, 0, None, None]) ** 2 + (self._grid[0][None, None] - points[:, :, 1, None, None]) ** 2
        heat = torch.exp(-d2 / (2 * align.HEATMAP_SIGMA**2))
        return torch.cat([rgb, self._mask.expand(len(faces), 1, -1, -1), heat], 1).contiguous()

    def beside(self, array: np.ndarray) -> torch.Tensor:
        return self.transfers.upload(array)

    @staticmethod
    def to_crop(face: torch.Tensor) -> torch.Tensor:
        return (face.permute(1, 2, 0).flip(-1) + 1) * 127.5

    def composite(self, image: torch.Tensor, faces: list) -> torch.Tensor:
        out = image.clone()
        if not faces:
            return out
        generated = torch.stack([g for g, _, _ in faces]).contiguous()
        aligned = [face for _, _, face in faces]
        flows = np.stack([np.zeros((align.SIZE, align.SIZE, 2), np.float32) if f is None else f for _, f, _ in faces])
        identity = np.tile(np.float32([[1, 0, 0], [0, 1, 0]]), (len(faces), 1, 1))
        moved = warp(generated, beside(generated, identity), self.transfers.upload(flows))
        originals = torch.stack([face.crop for face in aligned])
        shift = originals[:, self._ring].mean(1) - moved[:, self._ring].mean(1)  # match_colour, batched
        moved = (moved + shift[:, None, None, :]).clamp(0, 255).contiguous()
        composite(out, moved, np.stack([face.matrix for face in aligned]).astype(np.float32), self._alpha)
        return out

    def cover(self, image: torch.Tensor, faces: Faces, indices: list[int]) -> torch.Tensor:
        if not indices:
            return image
        return obscure(image, faces.boxes[np.array(indices, int)], self.fallback, out=image)

    def thumbnail(self, image: torch.Tensor) -> np.ndarray:
        step = max(1, min(image.shape[:2]) // 144)
        grey = image[::step, ::step].float() @ torch.tensor(GREY_BGR, device=image.device)
        small = F.interpolate(grey[None, None], size=(36, 64), mode="area")[0, 0]
        return self.transfers.download(small)

