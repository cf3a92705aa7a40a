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
        side = (image_size - 3) // 2 + 1 - 6
        self.out_features = channels * side * side

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: uint8 (B, k, H, W, 3) -> float (B, 1, out_features)."""
        b, k, h, w, _ = frames.shape
        x = frames.permute(0, 1, 4, 2, 3).reshape(b, 3 * k, h, w).float() / 255.0 - 0.5
        return self.net(x).flatten(1).unsqueeze(1)


def random_shift(frames: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: pad by replicating edges, then crop back at a random offset per sample.

    Args:
        frames: uint8 (B, k, H, W, 3); the same shift applies to all ``k`` frames of a sample.
        pad: maximum shift in pixels.
        generator: random source, for reproducibility.

    Returns:
        uint8 (B, k, H, W, 3), shifted.
    """
    b, k, h, w, c = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(b, k * c, h, w).float()
    x = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=frames.device)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=frames.device)
    rows = dy.view(b, 1) + torch.arange(h, device=frames.device)  # (B, H)
    cols = dx.view(b, 1) + torch.arange(w, device=frames.device)  # (B, W)
    batch = torch.arange(b, device=frames.device).view(b, 1, 1, 1)
    channel = torch.arange(k * c, device=frames.device).view(1, k * c, 1, 1)
    x = x[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]
    return x.round().to(torch.uint8).view(b, k, c, h, w).permute(0, 1, 3, 4, 2).contiguous()
