"""Names of the policy's representations and necks: plain data, importable without torch."""

from __future__ import annotations

from typing import Literal

Representation = Literal["frozen", "scratch", "state"]
"""``frozen``: a pretrained timm encoder's features; ``scratch``: DrQ-v2's conv encoder trained end to
end on pixels; ``state``: the full state vector."""
NeckKind = Literal["linear", "conv", "flare"]
"""``linear``: flatten and project (DrQ-v2's trunk); ``conv``: convolutions over spatial feature maps;
``flare``: the conv neck on each frame's latent map and the differences between frames (FLARE)."""
StudentKind = Literal["conv", "mlp"]
"""``conv``: a small conv net on stacked camera frames plus proprio; ``mlp``: an MLP on the state vector."""
