"""Student policies: small networks that imitate a teacher, raw observations in, bounded action out.

A student is what a robot host runs, so it holds everything between sensor and actuator: uint8
pixels are scaled inside it, and its action is squashed by tanh and scaled to the action bounds by
buffers it carries. Training works in the squashed space ``[-1, 1]`` (:meth:`normalized`), where
every action dimension weighs the same whatever its units.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from models.mlp import mlp

StudentKind = Literal["conv", "mlp"]
"""``conv``: a small conv net on stacked camera frames plus proprio; ``mlp``: an MLP on the state vector."""


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


class ConvStudent(Student):
    """Stacked uint8 frames ``pixels`` (B, H, W, 3k) and ``proprio`` (B, P) -> action.

    Four 3x3 convolutions as in DrQ-v2's encoder, but with strides 2, 2, 2, 1 instead of 2, 1, 1, 1:
    the flattened map is then about 25x smaller, and so is the linear layer after it, which holds
    most of DrQ-v2's parameters. Proprio joins after the trunk, as in the teacher.

    Args:
        image_shape: (H, W, 3k) of ``pixels``.
        proprio_dim: length of ``proprio`` (0 for none).
        action_low: lower action bounds.
        action_high: upper action bounds.
        channels: convolution channels.
        latent_dim: size of the trunk's output.
        hidden: hidden layers of the MLP after the trunk.
    """

    observation_names = ("pixels", "proprio")

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        channels: int = 32,
        latent_dim: int = 64,
        hidden: tuple[int, ...] = (256, 256),
    ) -> None:
        super().__init__(action_low, action_high)
        h, w, c = image_shape
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
            nn.ReLU(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros((1, c, h, w))).numel()
        self.trunk = nn.Sequential(nn.Linear(flat, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.head = mlp(latent_dim + proprio_dim, hidden, int(action_low.numel()))

    def normalized(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """``pixels`` uint8 (B, H, W, 3k), ``proprio`` float (B, P) -> action in [-1, 1], (B, A)."""
        x = observation["pixels"].permute(0, 3, 1, 2).float() / 255.0 - 0.5
        latent = self.trunk(self.conv(x).flatten(1))
        return torch.tanh(self.head(torch.cat([latent, observation["proprio"].float()], dim=-1)))


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
