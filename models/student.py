"""Student policies: small networks that imitate a teacher, raw observations in, bounded action out.

A student is what a robot host runs, so it holds everything between sensor and actuator: uint8
pixels are scaled inside it, and its action is squashed by tanh and scaled to the action bounds by
buffers it carries. Training works in the squashed space ``[-1, 1]`` (:meth:`normalized`), where
every action dimension weighs the same whatever its units.
"""

from __future__ import annotations

import torch
from torch import nn

from models.mlp import mlp


class Student(nn.Module):
    """Base of the students: the action bounds as buffers and the mapping from [-1, 1] to them.

    Args:
        action_low: lower action bounds, float (A,).
        action_high: upper action bounds, float (A,).
    """

    low: torch.Tensor
    high: torch.Tensor
    observation_names: tuple[str, ...] = ()

    def __init__(self, action_low: torch.Tensor, action_high: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("low", action_low.float().clone())
        self.register_buffer("high", action_high.float().clone())

    def normalized(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """The action in [-1, 1], float (B, A): what the imitation loss compares."""
        raise NotImplementedError

    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """The action within the bounds, float (B, A), for a batch of raw observations."""
        return self.low + 0.5 * (self.normalized(observation) + 1.0) * (self.high - self.low)


class SpatialSoftmax(nn.Module):
    """Feature maps (B, C, h, w) -> expected image coordinates of each channel (B, 2C), in [-1, 1].

    The keypoint layer of Levine et al. (2016), common in robot visuomotor policies: each channel
    becomes a soft "where", with no parameters, so the student stays small yet keeps positions.
    """

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps float (B, C, h, w) -> coordinates float (B, 2C): x of every channel, then y."""
        b, c, h, w = maps.shape
        weights = torch.softmax(maps.flatten(2), dim=-1).view(b, c, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        x = (weights.sum(dim=2) * xs).sum(dim=-1)
        y = (weights.sum(dim=3) * ys).sum(dim=-1)
        return torch.cat([x, y], dim=-1)


class ConvStudent(Student):
    """Stacked uint8 frames ``pixels`` (B, H, W, 3k) and ``proprio`` (B, P) -> action.

    Small on purpose: a robot host runs it on a CPU at control rate. The frames are average-pooled by
    ``downsample``, pass three 3x3 convolutions (strides 2, 2, 1; far fewer channels than DrQ-v2's
    encoder), and a spatial softmax turns each channel into keypoint coordinates. Proprio joins the
    keypoints before the MLP, as it joins the latent in the teacher.

    Args:
        image_shape: (H, W, 3k) of ``pixels``.
        proprio_dim: length of ``proprio`` (0 for none).
        action_low: lower action bounds.
        action_high: upper action bounds.
        channels: convolution channels.
        downsample: average-pooling factor applied to the frames first (1 keeps full resolution).
        hidden: hidden layers of the MLP after the keypoints.
    """

    observation_names = ("pixels", "proprio")

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        channels: int = 16,
        downsample: int = 2,
        hidden: tuple[int, ...] = (64, 64),
    ) -> None:
        super().__init__(action_low, action_high)
        h, w, c = image_shape
        if downsample < 1 or h // downsample < 16 or w // downsample < 16:
            raise ValueError(f"downsample is {downsample}; it must be >= 1 and leave frames of at least 16x16")
        self.pool = nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity()
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
        )
        self.keypoints = SpatialSoftmax()
        self.head = mlp(2 * channels + proprio_dim, hidden, int(action_low.numel()))

    def normalized(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """``pixels`` uint8 (B, H, W, 3k), ``proprio`` float (B, P) -> action in [-1, 1], (B, A)."""
        x = self.pool(observation["pixels"].permute(0, 3, 1, 2).float()) / 255.0 - 0.5
        points = self.keypoints(self.conv(x))
        return torch.tanh(self.head(torch.cat([points, observation["proprio"].float()], dim=-1)))


class MLPStudent(Student):
    """The ``state`` vector (B, S) -> action, through an MLP.

    Args:
        state_dim: length of ``state``.
        action_low: lower action bounds.
        action_high: upper action bounds.
        hidden: hidden layer sizes.
    """

    observation_names = ("state",)

    def __init__(
        self, state_dim: int, action_low: torch.Tensor, action_high: torch.Tensor, hidden: tuple[int, ...] = (256, 256)
    ) -> None:
        super().__init__(action_low, action_high)
        self.net = mlp(state_dim, hidden, int(action_low.numel()))

    def normalized(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """``state`` float (B, S) -> action in [-1, 1], (B, A)."""
        return torch.tanh(self.net(observation["state"].float()))
