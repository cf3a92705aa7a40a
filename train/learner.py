"""The learner: the replay, SAC's networks and optimizers, on a device; transitions in, weights out.

Collectors send :class:`~train.collector.Transitions`; the learner records them, samples batches
from its replay (in host memory), moves each batch to its device and updates. It hands out
:data:`~train.acting.PolicyWeights` for the collectors to act with. Its checkpointed state is
device-neutral: every tensor it saves is on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent_runtime.spec import PolicySpec
from models.encoder import FrozenEncoder
from train.acting import PolicyWeights, policy_weights
from train.collector import Transitions
from train.config import TrainConfig
from train.replay import Batch, Replay, ReplayLayout
from train.teacher import build_learner, frame_shape, history, proprio_dim


class Learner:
    """See the module docstring.

    Args:
        cfg: the run.
        spec: the run's policy spec.
        encoder: the frozen encoder (``frozen`` runs), for the shape of the stored features.
        frame_dtype: dtype of a stored frame (see :class:`~train.frames.FrameSource`).
        capacity_per_lane: replay slots per environment lane.
        replay_dir: where the replay's memory-mapped arrays live.
        resume: reopen the replay's arrays (the caller then restores the state).
        device: where the networks train.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        spec: PolicySpec,
        encoder: FrozenEncoder | None,
        frame_dtype: str,
        capacity_per_lane: int,
        replay_dir: Path,
        resume: bool,
        device: torch.device,
    ) -> None:
        self.cfg, self.device = cfg, device
        self.agent = build_learner(cfg, spec, encoder, device)
        layout = ReplayLayout(
            lanes=cfg.lanes,
            capacity_per_lane=capacity_per_lane,
            frame_shape=frame_shape(cfg, spec, encoder),
            frame_dtype=frame_dtype,
            proprio_dim=proprio_dim(cfg, spec),
            action_dim=spec.action.dim,
            history=history(cfg, spec),
            maps=cfg.representation == "frozen" and cfg.encoder.output == "spatial",
        )
        self.replay = Replay(layout, cfg.n_step, cfg.sac.gamma, replay_dir, resume=resume)
        self.rng = np.random.default_rng(cfg.seed)
        self.updates = 0

    def store(self, transitions: Transitions) -> None:
        """Record a collector's steps, in order, episode starts included."""
        starts = {start.after: start for start in transitions.starts}
        if -1 in starts:
            self.replay.start_episodes(starts[-1].lanes, starts[-1].frames, starts[-1].proprio)
        for t in range(len(transitions.reward)):
            self.replay.add_steps(
                transitions.action[t],
                transitions.reward[t],
                transitions.terminated[t],
                transitions.next_frames[t],
                transitions.next_proprio[t],
            )
            if t in starts:
                self.replay.start_episodes(starts[t].lanes, starts[t].frames, starts[t].proprio)

    def sample(self) -> Batch:
        """A batch from the replay, drawn with the learner's own random stream."""
        return self.replay.sample(self.cfg.batch_size, self.rng)

    def update(self, batch: Batch | None = None) -> dict[str, float]:
        """One SAC update on ``batch`` (by default one sampled now); returns its metrics."""
        metrics = self.agent.update(self.sample() if batch is None else batch)
        self.updates += 1
        return metrics

    def weights(self) -> PolicyWeights:
        """What a collector acts with: CPU copies of the observation head and the actor."""
        return policy_weights(self.agent.head, self.agent.actor)

    def state(self) -> dict[str, Any]:
        """The learner's part of a checkpoint (``save_checkpoint`` moves every tensor to the CPU)."""
        agent = self.agent
        return {
            "head": agent.head.state_dict(),
            "actor": agent.actor.state_dict(),
            "critic": agent.critic.state_dict(),
            "critic_target": agent.critic_target.state_dict(),
            "log_alpha": agent.log_alpha.detach().clone(),
            "optimizers": agent.optimizer_state(),
            "replay": self.replay.state(),
            "replay_capacity_per_lane": self.replay.layout.capacity_per_lane,
            "rng": {
                "numpy": self.rng.bit_generator.state,
                "agent": agent.generator.get_state(),
                "agent_device": agent.generator.device.type,
            },
        }

    def load_state(self, payload: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved (from a checkpoint loaded onto the CPU)."""
        agent = self.agent
        agent.head.load_state_dict(payload["head"])
        agent.actor.load_state_dict(payload["actor"])
        agent.critic.load_state_dict(payload["critic"])
        agent.critic_target.load_state_dict(payload["critic_target"])
        with torch.no_grad():
            agent.log_alpha.copy_(payload["log_alpha"])
        agent.load_optimizer_state(payload["optimizers"])  # moves the moments to the parameters' device
        self.replay.load_state(payload["replay"])
        rng = payload["rng"]
        self.rng.bit_generator.state = rng["numpy"]
        # A generator's state is specific to its device type; a run moved between CPU and GPU draws
        # fresh noise from a seed derived from its step instead.
        if rng.get("agent_device", "cpu") == agent.generator.device.type:
            agent.generator.set_state(rng["agent"])
        else:
            agent.generator.manual_seed(self.cfg.seed + int(payload["progress"]["step"]))
        self.updates = int(payload["progress"]["updates"])
