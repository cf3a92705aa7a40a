"""The from-scratch pixel encoder of DrQ-v2: four 3x3 convolutions trained end to end by the critic."""

from __future__ import annotations

import torch
from torch import nn


class ScratchConvEncoder(nn.Module):
    """uint8 frames ``(B, k, H, W, 3)`` -> features ``(B, 1, 32 * h * w)``.

    Layout as DrQ-v2 (Yarats et al., 2021): 32 channels, the first convolution with stride 2, the
    rest stride 1, ReLU after each. The ``k`` frames are stacked on the channel axis.
    """

    def __init__(self, frames: int, image_size: int, channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3 * frames, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
            nn.ReLU(),
        )
        # Channels-last weights and inputs: oneDNN's convolutions run faster on them on CPU (a whole
        # update 1.28-1.35x faster on 2 cores, `python -m bench.update_precision`). Same function.
        self.net.to(memory_format=torch.channels_last)
        side = (image_size - 3) // 2 + 1 - 6
        self.out_features = channels * side * side

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: uint8 (B, k, H, W, 3) -> float (B, 1, out_features)."""
        b, k, h, w, _ = frames.shape
        # (B, H, W, k, 3) in memory, seen as (B, 3k, H, W): channels last, frame-major channel order.
        x = frames.permute(0, 2, 3, 1, 4).reshape(b, h, w, k * 3).permute(0, 3, 1, 2)
        return self.net(x.float() / 255.0 - 0.5).flatten(1).unsqueeze(1)


def shift_maps(maps: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation on float maps: pad by replicating edges, crop back at a random offset per sample.

    Args:
        maps: float (B, C, H, W); every channel of a sample gets the same shift.
        pad: maximum shift in cells.
        generator: random source, for reproducibility.

    Returns:
        float (B, C, H, W), shifted.
    """
    b, c, h, w = maps.shape
    x = nn.functional.pad(maps, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=maps.device)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=maps.device)
    rows = dy.view(b, 1) + torch.arange(h, device=maps.device)  # (B, H)
    cols = dx.view(b, 1) + torch.arange(w, device=maps.device)  # (B, W)
    batch = torch.arange(b, device=maps.device).view(b, 1, 1, 1)
    channel = torch.arange(c, device=maps.device).view(1, c, 1, 1)
    return x[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def random_shift(frames: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation of camera frames (see :func:`shift_maps`).

    Args:
        frames: uint8 (B, k, H, W, 3); the same shift applies to all ``k`` frames of a sample.
        pad: maximum shift in pixels.
        generator: random source, for reproducibility.

    Returns:
        uint8 (B, k, H, W, 3), shifted.
    """
    b, k, h, w, c = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(b, k * c, h, w).float()
    x = shift_maps(x, pad, generator)
    return x.round().to(torch.uint8).view(b, k, c, h, w).permute(0, 1, 3, 4, 2).contiguous()


def random_shift_features(features: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's shift applied to frozen spatial features, as augmentation that needs no re-encoding.

    Args:
        features: (B, k, C, h, w) feature maps of a frame history; one shift per sample.
        pad: maximum shift in feature cells (one cell of a stride-8 map is 8 pixels).
        generator: random source, for reproducibility.

    Returns:
        float (B, k, C, h, w), shifted.
    """
    b, k, c, h, w = features.shape
    return shift_maps(features.float().reshape(b, k * c, h, w), pad, generator).view(b, k, c, h, w)
