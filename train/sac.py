"""Soft actor-critic (Haarnoja et al., 2018) with twin critics, a learned temperature and n-step targets.

The observation head (the trainable neck, and for the from-scratch baseline the conv encoder) learns
from the critic's loss only: the actor sees ``head(obs).detach()``, as in DrQ-v2.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.actor import TanhGaussianActor
from models.critic import TwinQ
from models.policy import ObservationHead
from models.scratch_encoder import random_shift, random_shift_features
from train.config import SACConfig
from train.replay import Batch


class SAC(nn.Module):
    """The learner: head, actor, twin critics, target critics and temperature, with their optimizers.

    Args:
        head: the observation head (trained by the critic loss).
        action_low: lower action bounds (the actor scales [-1, 1] to them).
        action_high: upper action bounds.
        config: hyperparameters.
        generator: random source for action noise and augmentation.
    """

    def __init__(
        self,
        head: ObservationHead,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        config: SACConfig,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.config = config
        self.head = head
        self.actor = TanhGaussianActor(head.out_dim, action_low, action_high, config.hidden)
        self.critic = TwinQ(head.out_dim, self.actor.action_dim, config.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.target_entropy = -float(self.actor.action_dim)
        self.generator = generator
        # Not fused=True: on this 2-core CPU the fused Adam step was 10x slower than the default
        # (30 ms against 3 ms for the twin critics).
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        stage_all = list(head.last_stage.parameters()) if head.last_stage is not None else []
        stage = [p for p in stage_all if p.requires_grad]  # frozen under PIE-G's statistics alone
        rest = [p for p in head.parameters() if all(p is not q for q in stage_all)]
        groups: list[dict[str, Any]] = [{"params": [*self.critic.parameters(), *rest], "lr": config.critic_lr}]
        if stage:
            groups.append({"params": stage, "lr": config.encoder_lr})
        self.critic_opt = torch.optim.Adam(groups)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)

    @property
    def alpha(self) -> torch.Tensor:
        """The entropy temperature (a scalar tensor)."""
        return self.log_alpha.exp()

    @torch.no_grad()
    def act(self, frames: torch.Tensor, proprio: torch.Tensor, deterministic: bool) -> np.ndarray:
        """Actions in [-1, 1] for observations (B, k, *frame_shape) and proprio (B, P)."""
        x = self.head(frames, proprio)
        if deterministic:
            return self.actor.deterministic(x).numpy()
        return self.actor.sample(x, self.generator).action.numpy()

    def _augment(self, frames: torch.Tensor) -> torch.Tensor:
        if self.head.scratch is not None and self.config.augment_pad > 0:
            return random_shift(frames, self.config.augment_pad, self.generator)
        if self.head.representation == "frozen" and frames.ndim == 5 and self.config.feature_shift > 0:
            return random_shift_features(frames, self.config.feature_shift, self.generator)
        return frames

    def _head(self, frames: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """The observation head at the configured update precision; float32 out either way."""
        if self.config.head_precision == "float32":
            return self.head(frames, proprio)
        with torch.autocast(frames.device.type, dtype=torch.bfloat16):
            latent = self.head(frames, proprio)
        return latent.float()

    def critic_loss(self, x: torch.Tensor, action: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
        """Squared TD error of both critics against the shared target."""
        q1, q2 = self.critic(x, action)
        return F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)

    def actor_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E[alpha * log pi(a|s) - min Q(s, a)], a ~ pi; also returns log pi for the temperature."""
        sample = self.actor.sample(x, self.generator)
        q1, q2 = self.critic(x, sample.action)
        return (self.alpha.detach() * sample.log_prob - torch.min(q1, q2)).mean(), sample.log_prob

    def temperature_loss(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Tunes alpha so the policy's entropy tracks the target entropy (-|A|)."""
        return -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step on critics (and head), actor and temperature; returns metrics."""
        t = _to_device(batch, self.log_alpha.device)
        x = self._head(self._augment(t["frames"]), t["proprio"])
        with torch.no_grad():
            # A separate pass without gradients: fusing it with the pass above would make the
            # backward pass run over twice the rows (measured: the neck's matmuls dominate).
            next_x = self._head(self._augment(t["next_frames"]), t["next_proprio"])
            next_sample = self.actor.sample(next_x, self.generator)
            next_q = torch.min(*self.critic_target(next_x, next_sample.action)) - self.alpha * next_sample.log_prob
            target_q = t["reward"] + t["discount"] * next_q

        critic_loss = self.critic_loss(x, t["action"], target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # The actor learns on a detached latent: the neck and encoder learn from the critic only.
        # The critic's weights take no gradient here (it flows through them to the action only).
        self.critic.requires_grad_(False)
        actor_loss, log_prob = self.actor_loss(x.detach())
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)

        alpha_loss = self.temperature_loss(log_prob)
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for target, online in zip(self.critic_target.parameters(), self.critic.parameters(), strict=True):
                target.lerp_(online, self.config.tau)
        return {
            "loss/critic": float(critic_loss.detach()),
            "loss/actor": float(actor_loss.detach()),
            "loss/temperature": float(alpha_loss.detach()),
            "train/alpha": float(self.alpha.detach()),
            "train/entropy": float(-log_prob.detach().mean()),
            "train/q_target": float(target_q.mean()),
        }

    def optimizer_state(self) -> dict[str, Any]:
        """Optimizer states, for checkpoints."""
        return {
            "actor": self.actor_opt.state_dict(),
            "critic": self.critic_opt.state_dict(),
            "alpha": self.alpha_opt.state_dict(),
        }

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`optimizer_state` saved."""
        self.actor_opt.load_state_dict(state["actor"])
        self.critic_opt.load_state_dict(state["critic"])
        self.alpha_opt.load_state_dict(state["alpha"])


def _to_device(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    """The batch as tensors on ``device``, with no copy on the CPU.

    Half-precision features stay half precision (the head converts them once, on the device), and
    the replay's channels-last feature maps keep their layout (a contiguous copy would transpose
    them). For a GPU each array is pinned and copied without blocking the host.
    """
    tensors = {name: torch.from_numpy(value) for name, value in batch._asdict().items()}
    if device.type == "cpu":
        return tensors
    return {name: _moved_in_layout(t, device) for name, t in tensors.items()}


def _moved_in_layout(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``, its memory order kept.

    A permuted view of dense memory (the replay's channels-last maps) travels as that memory, pinned,
    instead of being transposed on the host first.
    """
    order = memory_order(tensor)
    dense = tensor.permute(order)
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return dense.pin_memory().to(device, non_blocking=True).permute(inverse)


def memory_order(tensor: torch.Tensor) -> list[int]:
    """The dimensions of ``tensor`` from the largest stride to the smallest (ties keep their order).

    Permuted in this order, a view of dense memory (a transposed or channels-last tensor) is contiguous.
    """
    strides = tensor.stride()
    return sorted(range(tensor.ndim), key=lambda d: -strides[d])
