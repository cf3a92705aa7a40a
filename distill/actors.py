"""Policies as plain callables (one observation in, one action out), and as evaluation policies.

The teacher in onnxruntime, a student in torch and uniformly random actions all act through the same
:data:`Actor` signature, so collection, labelling and evaluation treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agent_runtime.spec import ONNX_ACTION_OUTPUT, PolicySpec
from train.onnx_io import cpu_session

Actor = Callable[[dict[str, np.ndarray]], np.ndarray]
"""One observation (entry name -> unbatched array) -> one action within the bounds, float (A,).

A policy answering with action chunks acts through its chunk's first action: re-planned at every step."""


def torch_actor(module: nn.Module) -> Actor:
    """A batch-of-one torch policy (observation dict -> float (B, A)) as an :data:`Actor`."""

    def act(observation: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            batch = {name: torch.from_numpy(np.ascontiguousarray(value[None])) for name, value in observation.items()}
            return _first(np.asarray(module(batch)[0].numpy()))

    return act


def onnx_actor(path: Path, names: tuple[str, ...], threads: int) -> Actor:
    """An exported policy in onnxruntime as an :data:`Actor` (batch of one)."""
    session = cpu_session(path, threads)

    def act(observation: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(observation[name][None]) for name in names}
        (action,) = session.run([ONNX_ACTION_OUTPUT], feed)
        return _first(np.asarray(action[0]))

    return act


def _first(answer: np.ndarray) -> np.ndarray:
    """The action for this step: an action chunk's (H, A) first row, or the (A,) action itself."""
    return answer[0] if answer.ndim == 2 else answer


def random_actor(spec: PolicySpec, seed: int) -> Actor:
    """Uniformly random actions within the bounds: the floor every policy is compared with."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(spec.action.low), np.asarray(spec.action.high)
    return lambda _observation: rng.uniform(low, high).astype(np.float32)


class ActorPolicy:
    """An :data:`Actor` as an evaluation policy (``train.evaluate``); the environment stacks the frame history."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    def reset(self) -> None:
        """Nothing to clear: observations carry their own history."""

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The action for one observation."""
        return self.actor(observation)
