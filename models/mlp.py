"""A plain multi-layer perceptron, the building block of actors and critics."""

from __future__ import annotations

from itertools import pairwise

from torch import nn


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear layers with ReLU between them: ``in_dim -> hidden... -> out_dim``."""
    layers: list[nn.Module] = []
    dims = (in_dim, *hidden)
    for a, b in pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)
