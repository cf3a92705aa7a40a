"""Compression necks: from frozen encoder features (with frame history) to a small latent.

As in DrQ-v2, PVR and VC-1, a small trainable neck sits between a frozen (or from-scratch) visual
representation and the actor-critic. It learns from the critic's loss only.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearNeck(nn.Module):
    """Flattened features ``(B, k, *feature_shape)`` -> Linear -> LayerNorm -> tanh ``(B, latent)``.

    The DrQ-v2 "trunk". Suits pooled embeddings (``feature_shape = (D,)``); on spatial maps it is
    one big linear layer over every position.
    """

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.latent_dim = latent_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: float (B, k, ...) -> latent (B, latent_dim)."""
        return self.net(features.flatten(1))


class ConvNeck(nn.Module):
    """Spatial features ``(B, k, C, h, w)`` -> 1x1 conv over stacked channels -> 3x3 conv -> Linear.

    A 1x1 convolution first mixes the ``k * C`` channels of the frame history (so motion between
    frames is visible to it) down to ``channels``; a 3x3 convolution with stride 2 then halves the
    map before the linear projection to the latent, with LayerNorm and tanh as in DrQ-v2.
    """

    def __init__(self, frames: int, feature_shape: tuple[int, int, int], latent_dim: int, channels: int = 32) -> None:
        super().__init__()
        c, h, w = feature_shape
        mix = nn.Conv2d(frames * c, channels, kernel_size=1)
        self.conv = nn.Sequential(mix, nn.ReLU(), *_halve(channels, channels))
        self.project = _projection(channels, h, w, latent_dim)
        self.latent_dim = latent_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: float (B, k, C, h, w) -> latent (B, latent_dim)."""
        x = features.flatten(1, 2)
        return self.project(self.conv(x).flatten(1))


class FlareNeck(nn.Module):
    """Spatial features ``(B, k, C, h, w)`` -> per-frame latents and their differences (FLARE) -> conv -> Linear.

    FLARE (Shang et al., 2021, "Reinforcement Learning with Latent Flow"): each frame is encoded on
    its own, and the policy sees the newest frame's latent beside the differences between consecutive
    frames' latents, so velocity is given explicitly rather than left to be inferred from stacked
    inputs. Here a 1x1 convolution with ReLU, shared by all frames, makes each frame's latent map
    ``z_i`` (``channels`` deep); the stack ``[z_{k-1}, z_{k-1} - z_{k-2}, ..., z_1 - z_0]`` then goes
    through the same 3x3 stride-2 convolution and projection as :class:`ConvNeck`.

    The 1x1 convolution is a linear layer on each cell's channel vectors, applied in cell order: the
    replay's maps are ``(B, h, w, k, C)`` in memory, and in that order neither the per-frame latents
    nor their stack (channels-last for the 3x3 convolution) need a transposing copy.
    """

    def __init__(self, frames: int, feature_shape: tuple[int, int, int], latent_dim: int, channels: int = 32) -> None:
        super().__init__()
        if frames < 2:
            raise ValueError(f"a FLARE neck needs a frame history of at least 2 frames; this task keeps {frames}")
        c, h, w = feature_shape
        self.per_frame = nn.Sequential(nn.Linear(c, channels), nn.ReLU())  # a 1x1 conv on cells
        self.conv = nn.Sequential(*_halve(frames * channels, channels))
        self.project = _projection(channels, h, w, latent_dim)
        self.latent_dim = latent_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: float (B, k, C, h, w) -> latent (B, latent_dim)."""
        z = self.per_frame(features.permute(0, 3, 4, 1, 2))  # (B, h, w, k, channels)
        flow = z[..., 1:, :] - z[..., :-1, :]  # newest difference last
        stacked = torch.cat([z[..., -1:, :], flow.flip(-2)], dim=-2)  # (B, h, w, k, channels)
        x = stacked.flatten(3).permute(0, 3, 1, 2)  # (B, k * channels, h, w), channels-last
        return self.project(self.conv(x).flatten(1))


def _halve(in_channels: int, channels: int) -> list[nn.Module]:
    """The spatial necks' 3x3 stride-2 convolution with ReLU: the map's height and width halved."""
    return [nn.Conv2d(in_channels, channels, kernel_size=3, stride=2, padding=1), nn.ReLU()]


def _projection(channels: int, h: int, w: int, latent_dim: int) -> nn.Sequential:
    """The halved ``(channels, h, w)`` map, flattened -> Linear -> LayerNorm -> tanh, as in DrQ-v2."""
    out_h, out_w = (h + 1) // 2, (w + 1) // 2
    return nn.Sequential(nn.Linear(channels * out_h * out_w, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())


class IdentityNeck(nn.Module):
    """No compression: the state vector itself is the latent (state-based SAC)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.latent_dim = in_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: float (B, 1, S) -> (B, S)."""
        return features.flatten(1)
