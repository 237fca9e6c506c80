"""The face generator (and the discriminator it is trained against).

A small U-Net inpainter in the spirit of DeepPrivacy: it sees the aligned crop with the
face region zeroed, the mask, and five landmark heatmaps (the pose and expression to
keep), and draws a face for the masked region from a latent code. The code enters the
bottleneck and every decoder level through FiLM (a per-channel scale and shift), so
one code gives one consistent synthetic identity.

Sized for the CPU path: about 3 GFLOP and 18 MB of weights per 128x128 face.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from veil.engines.align import IN_CHANNELS, LATENT

WIDTHS = (32, 64, 128, 256, 256)  # at 128, 64, 32, 16 and 8 pixels


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class FiLM(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.to_scale = nn.Linear(LATENT, channels)
        self.to_shift = nn.Linear(LATENT, channels)
        for layer in (self.to_scale, self.to_shift):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.to_scale(z)[:, :, None, None]) + self.to_shift(z)[:, :, None, None]


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = FiLM(channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(_act(self.film(self.conv1(_act(x)), z)))


class Generator(nn.Module):
    """(image Bx9x128x128, or Bx17 with the mesh's expression; latent Bx64) -> face Bx3x128x128 in [-1, 1].

    The output is the whole crop; only the masked region (and a thin blend ring around
    it) is used. Training asks the rest to match the input, which keeps the seam smooth.
    """

    def __init__(self, in_channels: int = IN_CHANNELS):
        super().__init__()
        w = WIDTHS
        self.stem = nn.Conv2d(in_channels, w[0], 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1) for i in range(4))
        self.middle = nn.ModuleList([ResBlock(w[4]), ResBlock(w[4])])
        self.up = nn.ModuleList(nn.Conv2d(w[i + 1], w[i], 3, padding=1) for i in reversed(range(4)))
        self.up_film = nn.ModuleList(FiLM(w[i]) for i in reversed(range(4)))
        self.to_rgb = nn.Conv2d(w[0], 3, 3, padding=1)

    def forward(self, image: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        x = _act(self.stem(image))
        skips = [x]
        for conv in self.down:
            x = _act(conv(x))
            skips.append(x)
        skips.pop()
        for block in self.middle:
            x = block(x, latent)
        for conv, film in zip(self.up, self.up_film):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = _act(film(conv(x), latent) + skips.pop())
        return torch.tanh(self.to_rgb(x))


class Discriminator(nn.Module):
    """PatchGAN on (RGB, mask, heatmaps): judges whether the face fits its context and pose.

    Returns the patch logits and the intermediate features (for feature matching).
    """

    def __init__(self, width: int = 64, in_channels: int = IN_CHANNELS):
        super().__init__()
        chans = (in_channels, width, 2 * width, 4 * width, 8 * width)  # the RGB it judges and the condition beside it
        self.blocks = nn.ModuleList(
            nn.utils.spectral_norm(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1)) for i in range(4)
        )
        self.head = nn.utils.spectral_norm(nn.Conv2d(chans[-1], 1, 3, padding=1))

    def forward(self, rgb: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.cat([rgb, condition], dim=1)
        features = []
        for block in self.blocks:
            x = _act(block(x))
            features.append(x)
        return self.head(x), features
