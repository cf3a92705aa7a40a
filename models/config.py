"""Configuration of the vision encoder: plain data, importable without torch (the CLI parses it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.catalog import DEFAULT_ENCODER

EncoderOutput = Literal["pooled", "spatial"]


@dataclass(frozen=True)
class EncoderConfig:
    """Which pretrained vision model turns frames into features."""

    name: str = DEFAULT_ENCODER
    """timm model name."""
    weights: str = "auto"
    """auto, embedded, hub, none, or a path to a local checkpoint file (see `agent-runtime encoders`)."""
    output: EncoderOutput = "pooled"
    """pooled: the global-pooled embedding (D,); spatial: a stage's feature map (C, h, w)."""
    stage: int = 2
    """Feature stage for spatial output, an index into timm's feature_info (for EfficientNet-Lite0:
    0..4 at strides 2, 4, 8, 16, 32)."""
    input_size: int | None = None
    """Resize frames to this square size before encoding; None: the model's own (224 for most)."""

    def __post_init__(self) -> None:
        if self.output not in ("pooled", "spatial"):
            raise ValueError(f"encoder.output is {self.output!r}; use 'pooled' or 'spatial'")
        if self.input_size is not None and self.input_size < 16:
            raise ValueError(f"encoder.input_size is {self.input_size}; use at least 16 (or None)")

    def describe(self) -> str:
        """A short label for logs and the policy spec, e.g. ``tf_efficientnet_lite0@224/pooled``."""
        size = self.input_size if self.input_size is not None else "native"
        out = "pooled" if self.output == "pooled" else f"stage{self.stage}"
        return f"{self.name}@{size}/{out}"
