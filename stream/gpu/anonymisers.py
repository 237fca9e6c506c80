"""Blur, pixelation and synth with the pixels on the device (veil.kernels)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from veil.engines import align
from veil.errors import InputError
from veil.kernels.composite import composite
from veil.kernels.loader import beside
from veil.kernels.obfuscate import obscure
from veil.kernels.preprocess import preprocess
from veil.kernels.warp import warp
from veil.stream.anonymisers.classic import Anonymiser
from veil.stream.anonymisers.synth import AlignedFace, SynthAnonymiser
from veil.stream.faces import Faces
from veil.stream.gpu.transfers import GREY_BGR, Transfers


class DeviceObscurer:
    """Blur or pixelate every face of a frame on the device (kernels/obfuscate.cu)."""

    def __init__(self, anonymiser: Anonymiser):
        if anonymiser.mode not in ("blur", "pixelate"):
            raise InputError(f"mode {anonymiser.mode} has no GPU kernel; blur, pixelate and synth have one, or run on the cpu device")
        self.anonymiser = anonymiser

    def apply(self, image: torch.Tensor, faces: Faces) -> torch.Tensor:
        height, width = image.shape[:2]
        return obscure(image, self.anonymiser.regions(faces.boxes, height, width), self.anonymiser.hiding())


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
        regions = self.fallback.regions(faces.boxes[np.array(indices, int)], *image.shape[:2])
        return obscure(image, regions, self.fallback.hiding(), out=image)

    def thumbnail(self, image: torch.Tensor) -> np.ndarray:
        step = max(1, min(image.shape[:2]) // 144)
        grey = image[::step, ::step].float() @ torch.tensor(GREY_BGR, device=image.device)
        small = F.interpolate(grey[None, None], size=(36, 64), mode="area")[0, 0]
        return self.transfers.download(small)
