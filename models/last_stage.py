"""The encoder's last stage as a trainable module: RL fine-tuning of a pretrained model, off by default.

With fine-tuning on, the run splits the encoder at its chosen feature stage ``s``: the frozen prefix
(stages up to ``s - 1``) still runs once per environment step and its maps go to the replay; stage
``s`` itself becomes part of the observation head and learns from the critic's loss with the neck.
So updates never re-encode pixels, yet the features the neck sees can adapt to the task.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from models.config import EncoderConfig
from models.weights import create_timm_model


class TrainableStage(nn.Module):
    """One encoder stage with trainable weights whose normalization statistics stay fixed.

    BatchNorm (and any dropout) stays in eval mode whatever the parent asks: batch statistics from
    replay minibatches would drift from those the pretrained weights expect, and the deployed
    policy must compute the same function as the one trained.

    Args:
        blocks: the stage's blocks, with pretrained weights.
    """

    def __init__(self, blocks: nn.Module) -> None:
        super().__init__()
        # Channels-last: on CPU an update with the stage took 2.7 s in it against 4.9 s in NCHW
        # (batch 256, 2 threads; python -m bench.update_precision --heads finetune).
        self.blocks = blocks.to(memory_format=torch.channels_last)
        self.blocks.eval()

    def train(self, mode: bool = True) -> TrainableStage:
        """Weights train; BatchNorm statistics do not (see the class docstring)."""
        super().train(mode)
        self.blocks.eval()
        return self

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps of the stage before, float (N, C_in, h_in, w_in) -> float (N, C, h, w), channels-last."""
        return self.blocks(maps.contiguous(memory_format=torch.channels_last))


def split_last_stage(config: EncoderConfig) -> tuple[EncoderConfig, TrainableStage]:
    """Split the encoder of ``config`` for fine-tuning its last stage.

    Returns:
        The config of the frozen prefix (the same encoder, output at ``stage - 1``) and the
        trainable last stage (pretrained weights from ``config.weights``).

    Raises:
        ValueError: pooled output, stage 0, or a timm model whose stages are not ``blocks.N``.
    """
    if config.output != "spatial":
        raise ValueError("fine-tuning the last stage needs encoder.output 'spatial' (the stage's map)")
    if config.stage < 1:
        raise ValueError("fine-tuning the last stage needs encoder.stage >= 1: stage 0 has no frozen stage before it")
    backbone = create_timm_model(config.name, config.weights)
    modules = [str(info["module"]) for info in backbone.feature_info]  # type: ignore[union-attr]
    if config.stage >= len(modules):
        raise ValueError(f"encoder.stage is {config.stage}; {config.name} has stages 0..{len(modules) - 1}")
    blocks = getattr(backbone, "blocks", None)
    first, last = _block_index(modules[config.stage - 1]), _block_index(modules[config.stage])
    if not isinstance(blocks, nn.Sequential) or first is None or last is None:
        raise ValueError(
            f"fine-tuning the last stage supports timm models whose stages are `blocks.N` (EfficientNet, "
            f"MobileNet and kin); {config.name}'s stages are {modules}"
        )
    stage = TrainableStage(copy.deepcopy(blocks[first + 1 : last + 1]))
    return dataclasses.replace(config, stage=config.stage - 1), stage


def _block_index(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None
