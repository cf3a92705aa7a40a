"""DAgger's collection on Ray actors: ``distill --collectors N``.

Each actor is a :class:`~distill.collector.LocalDaggerCollector` in a Ray worker: its own environment,
a CPU copy of the student (weights sent with every iteration through the object store) and the
teacher's ONNX file in onnxruntime for the labels (sent once, as bytes, so a remote node needs no file
of its own). An iteration's steps are split over the actors, the first ones taking one more where they
do not divide; actor ``i`` resets its episodes from its own slice of the iteration's seeds and replays
every ``n``-th of the seeds a failure check asks for. The parts are appended in actor order, so the
dataset on disk has the layout of in-process collection; with one actor it is the same data.

An actor that dies is restarted by Ray (``train.ray_actors``) and collects its share again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agent_runtime.spec import PolicySpec
from distill.actors import onnx_actor
from distill.collector import ITERATION_SEEDS, LocalDaggerCollector, StudentWeights
from distill.config import DistillConfig
from distill.dagger import Collection
from distill.student_checkpoint import build_student
from train.ray_actors import ActorPool, UsesActorPool

MakeEnv = Callable[[], gym.Env[dict[str, np.ndarray], np.ndarray]]


class DaggerActor:
    """One DAgger collector in a Ray worker (see the module docstring); set up with the teacher's ONNX bytes."""

    def __init__(
        self,
        make: MakeEnv,
        cfg: DistillConfig,
        spec: PolicySpec,
        teacher_names: tuple[str, ...],
        bounds: tuple[np.ndarray, np.ndarray],
        index: int,
    ) -> None:
        torch.set_num_threads(1)
        self._args = (make, cfg, spec, teacher_names, bounds, index)
        self._tmp = tempfile.TemporaryDirectory(prefix="agent-runtime-dagger-")
        self._collector: LocalDaggerCollector | None = None

    def setup(self, teacher_onnx: bytes) -> int:
        """Write the teacher's ONNX file, build the environment and the student; returns the process id."""
        make, cfg, spec, teacher_names, bounds, index = self._args
        path = Path(self._tmp.name) / "teacher.onnx"
        path.write_bytes(teacher_onnx)
        teacher = onnx_actor(path, teacher_names, threads=1)
        self._collector = LocalDaggerCollector(
            make(), build_student(cfg, spec), teacher, spec.observation_names, bounds, cfg.seed, index, cfg.chunk_noise
        )
        return os.getpid()

    def ping(self) -> int:
        """The worker's process id (a liveness probe)."""
        return os.getpid()

    def collect(
        self, weights: StudentWeights, beta: float, steps: int, first_seed: int, replay_seeds: Sequence[int]
    ) -> Collection:
        """:meth:`LocalDaggerCollector.collect` of this actor's share."""
        if self._collector is None:
            raise RuntimeError("DAgger actor used before setup")
        return self._collector.collect(weights, beta, steps, first_seed, None, replay_seeds)

    def close(self) -> None:
        """Close the environment and remove the teacher's file."""
        if self._collector is not None:
            self._collector.close()
        self._tmp.cleanup()


class RayDaggerCollectors(UsesActorPool):
    """``cfg.collectors`` DAgger collectors on Ray, behind the :class:`~distill.collector.DaggerCollector` interface.

    Args:
        cfg: the distillation (``collectors``, ``ray_address``, ``seed``).
        make: builds the environment each actor drives (pickled to the workers).
        spec: the student's spec.
        teacher_onnx: the teacher's exported ONNX file.
        teacher_names: the observation entries the teacher reads.
        bounds: (low, high) action bounds.
    """

    def __init__(
        self,
        cfg: DistillConfig,
        make: MakeEnv,
        spec: PolicySpec,
        teacher_onnx: Path,
        teacher_names: tuple[str, ...],
        bounds: tuple[np.ndarray, np.ndarray],
    ) -> None:
        args = (make, cfg, spec, teacher_names, bounds)
        self._pool = ActorPool(
            DaggerActor, lambda i: (*args, i), cfg.collectors, teacher_onnx.read_bytes(), cfg.ray_address,
            what="DAgger collectors",
        )  # fmt: skip

    def collect(
        self,
        weights: StudentWeights,
        beta: float,
        steps: int,
        first_seed: int,
        progress: Callable[[], None] | None = None,
        replay_seeds: Sequence[int] = (),
    ) -> Collection:
        """See :meth:`~distill.collector.DaggerCollector.collect`: the actors' shares, in actor order."""
        ray, actors = self._pool.ray, self._pool.actors
        n = len(actors)
        shares = [steps // n + (1 if i < steps % n else 0) for i in range(n)]
        ref = ray.put(weights)
        jobs = [
            (ref, beta, shares[i], first_seed + i * (ITERATION_SEEDS // n), tuple(replay_seeds[i::n])) for i in range(n)
        ]

        def redo(i: int) -> Any:
            return ray.get(actors[i].collect.remote(*jobs[i]))

        parts: list[Collection] = self._pool.gather(
            [a.collect.remote(*job) for a, job in zip(actors, jobs, strict=True)], redo
        )
        if progress is not None:
            for _ in range(steps):
                progress()
        names = parts[0].observations
        # Episode numbers made distinct across actors, so no chunk of labels spans two actors' rows.
        offsets = np.cumsum(
            [0] + [int(p.episodes.max()) + 1 if p.episodes is not None and len(p.episodes) else 0 for p in parts]
        )
        episodes = [p.episodes + off for p, off in zip(parts, offsets, strict=False) if p.episodes is not None]
        return Collection(
            {name: np.concatenate([p.observations[name] for p in parts]) for name in names},
            np.concatenate([p.labels for p in parts]),
            sum(p.teacher_steps for p in parts),
            tuple(r for p in parts for r in p.episode_returns),
            np.concatenate(episodes) if len(episodes) == len(parts) else None,
        )

    def close(self) -> None:
        """Stop the actors (and Ray, when this object started it)."""
        self._pool.close()
