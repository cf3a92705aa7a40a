"""The encoder's last stage inside the observation head: RL fine-tuning, or PIE-G's statistics; off by default.

With either on, the run splits the encoder at its chosen feature stage ``s``: the frozen prefix
(stages up to ``s - 1``) still runs once per environment step and its maps go to the replay; stage
``s`` itself becomes part of the observation head and runs in every update. So updates never
re-encode pixels, yet the features the neck sees can adapt to the task: by training the stage's
weights with the critic's loss (fine-tuning), or by letting its BatchNorm layers normalize with the
replay batch's statistics and track them as running statistics while the weights stay frozen (PIE-G).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from models.config import EncoderConfig
from models.weights import create_timm_model


class TrainableStage(nn.Module):
    """One encoder stage in the observation head: its weights, its normalization statistics, or both adapt.

    By default (fine-tuning) the weights train and BatchNorm (and any dropout) stays in eval mode
    whatever the parent asks: batch statistics from replay minibatches would drift from those the
    pretrained weights expect. With ``update_statistics`` (PIE-G's recipe), the BatchNorm layers
    follow the parent's mode instead: in training they normalize each replay batch with its own
    statistics and update their running statistics, which acting and the deployed policy (in eval
    mode) then use. Everything else stays in eval mode either way.

    Args:
        blocks: the stage's blocks, with pretrained weights.
        train_weights: the weights take gradients (fine-tuning); off, they stay frozen.
        update_statistics: BatchNorm in training mode when the head is (PIE-G).
    """

    def __init__(self, blocks: nn.Module, train_weights: bool = True, update_statistics: bool = False) -> None:
        super().__init__()
        # Channels-last: on CPU an update with the stage took 2.7 s in it against 4.9 s in NCHW
        # (batch 256, 2 threads; python -m bench.update_precision --heads finetune).
        self.blocks = blocks.to(memory_format=torch.channels_last)
        self.blocks.requires_grad_(train_weights)
        self.update_statistics = update_statistics
        self.train(self.training)  # a new module is in training mode: BatchNorm trains only with update_statistics

    def train(self, mode: bool = True) -> TrainableStage:
        """Only BatchNorm can change mode here, and only with ``update_statistics`` (see the class)."""
        super().train(mode)
        self.blocks.eval()
        if mode and self.update_statistics:
            for module in self.blocks.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.training = True  # itself only: timm's BatchNormAct2d holds its activation
        return self

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps of the stage before, float (N, C_in, h_in, w_in) -> float (N, C, h, w), channels-last."""
        return self.blocks(maps.contiguous(memory_format=torch.channels_last))


def split_last_stage(
    config: EncoderConfig, train_weights: bool = True, update_statistics: bool = False
) -> tuple[EncoderConfig, TrainableStage]:
    """Split the encoder of ``config`` at its last stage, to fine-tune it or to update its statistics.

    Returns:
        The config of the frozen prefix (the same encoder, output at ``stage - 1``) and the last
        stage (pretrained weights from ``config.weights``; see :class:`TrainableStage` for the flags).

    Raises:
        ValueError: pooled output, stage 0, a timm model whose stages are not ``blocks.N``, or
            statistics to update in a stage that has no BatchNorm.
    """
    if config.output != "spatial":
        raise ValueError("splitting off the last stage needs encoder.output 'spatial' (the stage's map)")
    if config.stage < 1:
        raise ValueError("splitting off the last stage needs encoder.stage >= 1: stage 0 has no frozen stage before it")
    backbone = create_timm_model(config.name, config.weights)
    modules = [str(info["module"]) for info in backbone.feature_info]  # type: ignore[union-attr]
    if config.stage >= len(modules):
        raise ValueError(f"encoder.stage is {config.stage}; {config.name} has stages 0..{len(modules) - 1}")
    if hasattr(backbone, "patch_embed"):
        raise ValueError(
            f"splitting off the last stage supports convolutional timm models whose stages are `blocks.N` "
            f"(EfficientNet, MobileNet and kin); {config.name} is a transformer, whose blocks take tokens, not maps"
        )
    blocks = getattr(backbone, "blocks", None)
    first, last = _block_index(modules[config.stage - 1]), _block_index(modules[config.stage])
    if not isinstance(blocks, nn.Sequential) or first is None or last is None:
        raise ValueError(
            f"splitting off the last stage supports timm models whose stages are `blocks.N` (EfficientNet, "
            f"MobileNet and kin); {config.name}'s stages are {modules}"
        )
    stage_blocks = copy.deepcopy(blocks[first + 1 : last + 1])
    if update_statistics and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in stage_blocks.modules()):
        raise ValueError(f"stage {config.stage} of {config.name} has no BatchNorm layer whose statistics could update")
    stage = TrainableStage(stage_blocks, train_weights, update_statistics)
    return dataclasses.replace(config, stage=config.stage - 1), stage


def _block_index(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None
