"""DAgger's collector: an environment and the teacher, acting with a snapshot of the student.

The same seam as training's (``train.collector``): student weights in (plain CPU tensors), labelled
observations out (:class:`~distill.dagger.Collection`, numpy arrays). The collector keeps its own
CPU copy of the student and its own random stream for who drives each step, so it could run in
another process while the student trains on its device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from distill.actors import Actor, torch_actor
from distill.dagger import Collection, collect
from models.student import Student

StudentWeights = dict[str, torch.Tensor]
"""A student's state dict, every tensor on the CPU."""

ITERATION_SEEDS = 10_000
"""Episode seeds set apart for one iteration's collection (its first is the runner's ``first_seed``)."""
COLLECTOR_STREAM = 1
"""Mixed into the seed of the collector's random stream, so it never repeats the minibatch sampler's."""


def student_weights(student: Student) -> StudentWeights:
    """CPU copies of a student's weights (wherever it trains), for a collector."""
    return {k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()}


class DaggerCollector(Protocol):
    """Collects labelled observations with the mixture of teacher and student (see ``distill.dagger``)."""

    def collect(
        self,
        weights: StudentWeights,
        beta: float,
        steps: int,
        first_seed: int,
        progress: Callable[[], None] | None = None,
        replay_seeds: Sequence[int] = (),
    ) -> Collection:
        """``steps`` labelled observations of the mixture policy.

        The student acts with ``weights``, the teacher drives a step with probability ``beta``; the
        first episodes reset with ``replay_seeds``, then episode ``j`` with ``first_seed + j``.
        """
        ...

    def close(self) -> None:
        """Close the environment."""
        ...


class LocalDaggerCollector:
    """A :class:`DaggerCollector` in this process.

    Args:
        env: an environment whose observations hold what both the student and the teacher read.
        student: a CPU student of the run's architecture; the collector acts with it (its weights are
            replaced at every collection).
        teacher: the teacher's actor; its actions are the labels.
        names: the student's observation entries (what the dataset stores).
        bounds: (low, high) action bounds, to express labels in [-1, 1].
        seed: the run's seed; who drives each step is drawn from a stream derived from it.
        index: which of several collectors this is (0: the stream of a collector alone).
        noise: standard deviation of Gaussian noise added to the teacher's action where it drives, in
            [-1, 1] action units (DART); the labels stay the teacher's own actions.
    """

    def __init__(
        self,
        env: gym.Env[dict[str, np.ndarray], np.ndarray],
        student: Student,
        teacher: Actor,
        names: Sequence[str],
        bounds: tuple[np.ndarray, np.ndarray],
        seed: int,
        index: int = 0,
        noise: float = 0.0,
    ) -> None:
        self.env, self.student, self.teacher = env, student.eval(), teacher
        self.noise = noise
        self.names, self.bounds = tuple(names), bounds
        self.rng = np.random.default_rng([seed, COLLECTOR_STREAM, index] if index else [seed, COLLECTOR_STREAM])

    def collect(
        self,
        weights: StudentWeights,
        beta: float,
        steps: int,
        first_seed: int,
        progress: Callable[[], None] | None = None,
        replay_seeds: Sequence[int] = (),
    ) -> Collection:
        """See :meth:`DaggerCollector.collect`."""
        self.student.load_state_dict(weights)
        actor = torch_actor(self.student)
        return collect(
            self.env, actor, self.teacher, beta, steps, self.names, self.bounds, self.rng, first_seed, progress,
            replay_seeds, self.noise,
        )  # fmt: skip

    def close(self) -> None:
        """See :meth:`DaggerCollector.close`."""
        self.env.close()
