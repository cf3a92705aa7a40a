"""The SAC actor: a tanh-squashed Gaussian over actions, scaled to the action bounds."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from models.mlp import mlp

# log std is clipped to this range, as in Stable-Baselines3. The raw output starts near 0 (std 1
# before tanh), so the policy explores widely at first. Squashing it with tanh into [-5, 2] instead
# (as DrQ and SAC-AE do) starts it at std 0.22; on InvertedPendulum from state, seed 0, SB3's
# hyperparameters, that version reached an evaluation return of 126 after 8k steps, this one 175.
LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


class ActionSample(NamedTuple):
    """A sampled action in [-1, 1] and its log-probability under the squashed Gaussian."""

    action: torch.Tensor  # float (B, A), in [-1, 1]
    log_prob: torch.Tensor  # float (B,)


class TanhGaussianActor(nn.Module):
    """``latent (+ proprio)`` -> mean and log std of a Gaussian, squashed by tanh to [-1, 1].

    Actions in this module live in [-1, 1]; :meth:`scale` maps them to the environment's bounds,
    which the module carries as buffers so that an exported actor holds its own action scaling.
    """

    low: torch.Tensor
    high: torch.Tensor

    def __init__(
        self, in_dim: int, action_low: torch.Tensor, action_high: torch.Tensor, hidden: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.action_dim = int(action_low.numel())
        self.net = mlp(in_dim, hidden, 2 * self.action_dim)
        self.register_buffer("low", action_low.float().clone())
        self.register_buffer("high", action_high.float().clone())

    def _mean_log_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def deterministic(self, x: torch.Tensor) -> torch.Tensor:
        """The policy's mode, tanh(mean), in [-1, 1]: (B, in_dim) -> (B, A)."""
        mean, _ = self._mean_log_std(x)
        return torch.tanh(mean)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ActionSample:
        """A reparameterized sample and its log-probability (tanh change of variables included)."""
        mean, log_std = self._mean_log_std(x)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        pre_tanh = mean + std * noise
        gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), numerically stable (SAC, appendix C).
        squash_correction = (2.0 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))).sum(-1)
        return ActionSample(torch.tanh(pre_tanh), gaussian_log_prob - squash_correction)

    def scale(self, action: torch.Tensor) -> torch.Tensor:
        """Map actions from [-1, 1] to [low, high]."""
        return self.low + 0.5 * (action + 1.0) * (self.high - self.low)

    def unscale(self, action: torch.Tensor) -> torch.Tensor:
        """Map actions from [low, high] to [-1, 1]."""
        return 2.0 * (action - self.low) / (self.high - self.low) - 1.0
