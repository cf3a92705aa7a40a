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


def shift_indices(b: int, h: int, w: int, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Source cells of DrQ's random shift: one offset per sample, edges replicated.

    Shifting by ``(dy, dx)`` with replicate padding is reading cell ``(clamp(i + dy), clamp(j + dx))``
    for output cell ``(i, j)``: no padded copy is ever built.

    Args:
        b: batch size.
        h: map height.
        w: map width.
        pad: maximum shift in cells, each way.
        generator: random source, for reproducibility.

    Returns:
        int64 ``(b, h * w)``: for each sample, the flat index ``row * w + col`` each output cell reads.
    """
    device = generator.device if generator is not None else None  # drawn where the generator lives
    dx = torch.randint(-pad, pad + 1, (b,), generator=generator, device=device)
    dy = torch.randint(-pad, pad + 1, (b,), generator=generator, device=device)
    rows = (dy.view(b, 1) + torch.arange(h, device=device)).clamp_(0, h - 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=device)).clamp_(0, w - 1)
    return (rows.view(b, h, 1) * w + cols.view(b, 1, w)).view(b, h * w)


def shift_maps(maps: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's augmentation: each sample's map moved by a random offset of up to ``pad`` cells, edges replicated.

    Args:
        maps: (B, C, H, W) of any dtype; every channel of a sample gets the same shift.
        pad: maximum shift in cells.
        generator: random source, for reproducibility.

    Returns:
        (B, C, H, W), shifted, of the input's dtype.
    """
    b, c, h, w = maps.shape
    cells = shift_indices(b, h, w, pad, generator).to(maps.device)
    return maps.reshape(b, c, h * w).gather(2, cells.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


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
    cells = shift_indices(b, h, w, pad, generator).to(frames.device)
    index = cells.view(b, 1, h * w, 1).expand(b, k, h * w, c)
    return frames.reshape(b, k, h * w, c).gather(2, index).view(b, k, h, w, c)


def random_shift_features(features: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's shift applied to frozen spatial features, as augmentation that needs no re-encoding.

    The maps are read channels-last, so the shift copies whole ``k * C`` channel vectors per cell
    (one row gather) instead of single numbers: ten times faster than padding and cropping on
    (256, 3, 40, 11, 11) half-precision maps (``python -m bench.update_precision``).

    Args:
        features: (B, k, C, h, w) feature maps of a frame history, any dtype; one shift per sample.
        pad: maximum shift in feature cells (one cell of a stride-8 map is 8 pixels).
        generator: random source, for reproducibility.

    Returns:
        (B, k, C, h, w), shifted, of the input's dtype: a view of channels-last memory (B, h, w, k, C).
    """
    b, k, c, h, w = features.shape
    cells = shift_indices(b, h, w, pad, generator).to(features.device)
    rows = (torch.arange(b, device=features.device).view(b, 1) * (h * w) + cells).view(-1)
    # A view when the maps are channels-last already, as the replay gives them (train.replay); a copy
    # otherwise. The result stays channels-last, (B, h, w, k, C) in memory: turning either layout into
    # the other is a strided half-precision copy, 3-15 ms per batch here, and the conv neck reads
    # channels-last maps as they are.
    by_cell = features.permute(0, 3, 4, 1, 2).reshape(b * h * w, k * c)
    return by_cell.index_select(0, rows).view(b, h, w, k, c).permute(0, 3, 4, 1, 2)
