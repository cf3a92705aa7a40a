"""A snapshot of the learner's policy for acting: collectors and evaluation run it, on the CPU.

The learner trains on its device; whoever acts holds a copy of its observation head and actor that
takes :data:`PolicyWeights` (plain CPU tensors, as a collector in another process would receive
them) and never sees the optimizers, the critics or the replay.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from agent_runtime.spec import PolicySpec
from models.actor import TanhGaussianActor
from models.encoder import FrozenEncoder
from models.policy import ObservationHead
from train.config import TrainConfig
from train.frames import Encode, FrameSource
from train.teacher import build_head, history

PolicyWeights = dict[str, dict[str, torch.Tensor]]
"""``{"head": state dict, "actor": state dict}`` of CPU tensors: what a learner sends its collectors."""


def policy_weights(head: ObservationHead, actor: TanhGaussianActor) -> PolicyWeights:
    """CPU copies of the acting part of a learner (wherever its device), safe to hand to another thread."""
    return {
        "head": {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()},
        "actor": {k: v.detach().to("cpu", copy=True) for k, v in actor.state_dict().items()},
    }


class ActingPolicy:
    """The observation head and actor of a run, on the CPU, acting with the weights last loaded.

    Args:
        cfg: the run (its head and actor are rebuilt from it).
        spec: the run's policy spec.
        encoder: the run's frozen encoder, for the shape of its features (``None`` for the pixel and
            state representations).
    """

    def __init__(self, cfg: TrainConfig, spec: PolicySpec, encoder: FrozenEncoder | None) -> None:
        # Built without weights: a snapshot only ever acts with weights loaded from the learner.
        rebuild = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights="none"))
        self.head = build_head(rebuild, spec, encoder).eval()
        self.actor = TanhGaussianActor(
            self.head.out_dim, torch.tensor(spec.action.low), torch.tensor(spec.action.high), cfg.sac.hidden
        ).eval()
        self.head.requires_grad_(False)
        self.actor.requires_grad_(False)

    def load(self, weights: PolicyWeights) -> None:
        """Act with these weights from now on."""
        self.head.load_state_dict(weights["head"])
        self.actor.load_state_dict(weights["actor"])

    @torch.no_grad()
    def act(self, frames: np.ndarray, proprio: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        """Actions in [-1, 1], float (B, A), for frames (B, k, *frame_shape) and proprio (B, P).

        With a ``generator`` the action is sampled from the policy (exploration), else it is the
        deterministic (mean) action.
        """
        x = self.head(torch.from_numpy(frames), torch.from_numpy(proprio))
        if generator is None:
            return self.actor.deterministic(x).numpy()
        return self.actor.sample(x, generator).action.numpy()

    @torch.no_grad()
    def scale(self, action: np.ndarray) -> np.ndarray:
        """Actions in [-1, 1] to the action bounds, by the actor's own mapping (the one export carries)."""
        return self.actor.scale(torch.from_numpy(action)).numpy()


class EpisodePolicyOf:
    """An :class:`ActingPolicy` acting deterministically, episode by episode, through its own frame history.

    This is the shape :func:`train.evaluate.evaluate` takes.
    """

    def __init__(self, policy: ActingPolicy, cfg: TrainConfig, spec: PolicySpec, encode: Encode | None) -> None:
        self.policy = policy
        self.source = FrameSource(cfg.representation, history(cfg, spec), lanes=1, encode=encode)
        self._first = True

    def reset(self) -> None:
        """A new episode: the next frame starts a fresh history."""
        self._first = True

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The scaled deterministic action for one observation."""
        batch = {k: v[None] for k, v in observation.items()}
        frame = self.source.frames(batch)
        if self._first:
            self.source.reset_lanes(np.array([0]), frame)
            self._first = False
        else:
            self.source.push(frame)
        action = self.policy.act(self.source.stacked(), FrameSource.proprio(batch))
        return self.policy.scale(action)[0]
