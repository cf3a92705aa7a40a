"""A simulated robot: a MuJoCo task preset behind the :class:`~agent_runtime.robot.Robot` protocol.

Observations come from ``train.envs.make_env``, the one place environments are built, so the served
policy sees exactly what it saw in training: rendered, stacked camera frames plus proprio, or the
state vector. It lives beside the environments it wraps, in the training layer, because it needs the
training extra (gymnasium, MuJoCo); a real robot implements the same protocol with the runtime alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agent_runtime.spec import PolicySpec
from train.envs import build_spec, make_env
from train.presets import get_preset


class SimRobot:
    """A preset's environment as a robot; its episodes' seeds and returns are kept.

    ``apply`` returns ``True`` when the episode ended (terminated or truncated), and the control loop
    then calls ``reset``. A caller that observes or applies again without resetting starts the next
    episode there (the reset happens first).

    Episode ``i`` (counting from 0, across every reset) resets the environment with ``seed + i``, so
    any episode can be replayed alone: ``agent-runtime evaluate --seeds S`` runs the same episode
    in-process.

    Args:
        preset: task preset name (see ``agent-runtime presets``) or preset file path.
        mode: ``"pixels"`` (camera frames + proprio) or ``"state"``.
        seed: seed of the first episode's reset.
    """

    def __init__(self, preset: str, mode: str = "pixels", seed: int = 0) -> None:
        self.preset = get_preset(preset)
        """The task the robot runs (a built-in preset or a preset file's)."""
        self._spec = build_spec(self.preset, mode)  # type: ignore[arg-type]
        self._env: Any = make_env(self.preset, mode)  # type: ignore[arg-type]
        self._next_seed = seed
        self._seed = seed  # the running episode's
        self._obs: dict[str, np.ndarray] | None = None
        self._ended = False
        self._return = 0.0
        self.episode_returns: list[float] = []
        """Sum of environment rewards of every finished episode, in order."""
        self.episode_seeds: list[int] = []
        """The reset seed of every finished episode, beside ``episode_returns``."""
        self.steps = 0
        """Actions applied since construction."""

    @property
    def spec(self) -> PolicySpec:
        """The preset's policy spec for this observation mode."""
        return self._spec

    def reset(self) -> None:
        """Start a new episode, with the next seed; the unfinished one's return is discarded."""
        self._seed = self._next_seed
        self._next_seed += 1
        self._obs, _ = self._env.reset(seed=self._seed)
        self._ended = False
        self._return = 0.0

    def observe(self) -> dict[str, np.ndarray]:
        """The observation after the last applied action (or the reset)."""
        if self._obs is None:
            raise RuntimeError("observe() before reset(): reset the robot first")
        if self._ended:  # the episode ended and nobody reset: the next one starts here
            self.reset()
        assert self._obs is not None
        return self._obs

    def apply(self, action: np.ndarray) -> bool:
        """Step the simulation with ``action`` (float32 (A,)); ``True`` when that ended the episode (recorded)."""
        if self._obs is None:
            raise RuntimeError("apply() before reset(): reset the robot first")
        if self._ended:
            self.reset()
        self._obs, reward, terminated, truncated, _ = self._env.step(action)
        self._return += float(reward)
        self.steps += 1
        if terminated or truncated:
            self.episode_returns.append(self._return)
            self.episode_seeds.append(self._seed)
            self._ended = True
        return self._ended

    def close(self) -> None:
        """Close the environment and its renderer."""
        self._env.close()

    def __enter__(self) -> SimRobot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
