"""Twin Q-functions for SAC (clipped double Q-learning, Fujimoto et al., 2018)."""

from __future__ import annotations

import torch
from torch import nn

from models.mlp import mlp


class TwinQ(nn.Module):
    """Two independent Q-networks: ``(latent (+ proprio), action in [-1, 1]) -> (Q1, Q2)``."""

    def __init__(self, in_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.q1 = mlp(in_dim + action_dim, hidden, 1)
        self.q2 = mlp(in_dim + action_dim, hidden, 1)

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, in_dim), action: (B, A) -> Q1, Q2: (B,) each."""
        xa = torch.cat([x, action], dim=-1)
        return self.q1(xa).squeeze(-1), self.q2(xa).squeeze(-1)
