"""A frozen timm vision encoder that takes uint8 camera frames.

Resizing and normalization come from timm's data config for the model and live inside the module,
so whatever holds the encoder (a teacher, an exported graph) feeds it raw frames.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from models.config import EncoderConfig
from models.weights import WeightsError, create_timm_model

_INTERPOLATION = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


class FrozenEncoder(nn.Module):
    """A pretrained timm model, frozen, from uint8 frames to features.

    Frozen means no parameter takes gradients and every layer (BatchNorm included) stays in eval
    mode even when a parent module is put in train mode. Frames are resized to the model's input
    size without cropping: timm's centre crop is for ImageNet evaluation and would cut off the edges
    of the robot's workspace.

    Args:
        config: which model, which weights, which output.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        backbone = create_timm_model(config.name, config.weights)
        data_config = timm.data.resolve_model_data_config(backbone)
        native = int(data_config["input_size"][-1])
        self.input_size = config.input_size if config.input_size is not None else native
        if self.input_size != native and _fixed_input_size(backbone):
            # A vision transformer's patch grid is set when it is built: build it for this size
            # (timm resamples pretrained position embeddings to the new grid as it loads them).
            try:
                backbone = create_timm_model(config.name, config.weights, img_size=self.input_size)
            except WeightsError:
                raise
            except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
                raise ValueError(
                    f"{config.name} takes {native}x{native} images and cannot be built for encoder.input_size "
                    f"{self.input_size} ({exc}); set encoder.input_size to {native} or a size it accepts"
                ) from exc
        self.interpolation = _INTERPOLATION.get(str(data_config["interpolation"]), "bilinear")
        mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(data_config["std"], dtype=torch.float32).view(1, 3, 1, 1)
        # Folding the 1/255 into the normalization: x = frame * scale + shift.
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)
        if config.output == "spatial":
            if not hasattr(backbone, "forward_intermediates"):
                raise ValueError(f"{config.name} has no forward_intermediates in timm; use encoder.output='pooled'")
            stages = len(backbone.feature_info)  # type: ignore[arg-type]
            if not 0 <= config.stage < stages:
                raise ValueError(f"encoder.stage is {config.stage}; {config.name} has stages 0..{stages - 1}")
            # Drop the blocks after the chosen stage and the head: they would cost time for nothing.
            backbone.prune_intermediate_layers([config.stage], prune_head=True)  # type: ignore[operator]
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Keep the backbone in eval mode whatever the parent asks (BatchNorm statistics stay fixed)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def export_problem(self, height: int, width: int) -> str | None:
        """Why frames of ``height`` x ``width`` would keep this encoder from exporting to ONNX; ``None`` if they do not.

        Shrinking frames antialiases (unless the model's interpolation is nearest), and ONNX has no
        antialiased resize: the exporter refuses it.
        """
        if max(height, width) <= self.input_size or self.interpolation == "nearest":
            return None
        return (
            f"frames of {height}x{width} are shrunk to the encoder's input size {self.input_size} with antialiasing, "
            f"which does not export to ONNX; give the encoder an input size of at least {max(height, width)} "
            f"(--encoder.input-size {max(height, width)}), or render frames of at most {self.input_size} pixels "
            "(the preset's image_size)"
        )

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) frames to the normalized float (N, 3, S, S) the backbone expects."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (N, H, W, 3); got {frames.dtype} {tuple(frames.shape)}")
        x = frames.permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            # Antialiasing matters only when shrinking; enlarging without it also exports to ONNX.
            shrinking = x.shape[-1] > self.input_size or x.shape[-2] > self.input_size
            antialias = shrinking and self.interpolation != "nearest"
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation, antialias=antialias)
        return x * self.scale + self.shift

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Features of uint8 frames (N, H, W, 3): float (N, D) pooled or (N, C, h, w) spatial."""
        x = self.preprocess(frames).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            if self.config.output == "spatial":
                (features,) = self.backbone.forward_intermediates(  # type: ignore[operator]
                    x, indices=[self.config.stage], intermediates_only=True
                )
                return features.contiguous()
            return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)  # type: ignore[operator]

    def output_shape(self, frame_hw: tuple[int, int]) -> tuple[int, ...]:
        """The per-frame feature shape for frames of ``frame_hw`` = (H, W), found by a dry run.

        Raises:
            ValueError: the model cannot encode frames at this input size (timm's own check, named).
        """
        probe = torch.zeros((1, *frame_hw, 3), dtype=torch.uint8, device=self.scale.device)
        try:
            return tuple(self(probe).shape[1:])
        except (AssertionError, RuntimeError) as exc:  # timm asserts sizes; torch raises on shapes
            raise ValueError(
                f"encoder {self.config.describe()} cannot encode {frame_hw[0]}x{frame_hw[1]} frames resized to "
                f"{self.input_size}x{self.input_size}: {exc}. Choose another encoder.input_size or encoder.stage"
            ) from exc


def _fixed_input_size(backbone: nn.Module) -> bool:
    """Whether a timm model only takes the image size it was built for (a strict patch embedding)."""
    patch_embed = getattr(backbone, "patch_embed", None)
    return bool(getattr(patch_embed, "strict_img_size", False))
