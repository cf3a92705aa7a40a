"""The collector: environments, rendering and the frozen encoder, acting with a policy snapshot.

A collector turns policy weights into :class:`Transitions`: frames already encoded (what the replay
stores), actions in [-1, 1], rewards, terminations and where new episodes began. It holds no learner
state, so it can live in another process or on another machine: everything that crosses the seam is
a NamedTuple of numpy arrays one way and :data:`~train.acting.PolicyWeights` the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
import torch

from agent_runtime.spec import PolicySpec
from models.encoder import FrozenEncoder
from train.acting import ActingPolicy, PolicyWeights
from train.config import TrainConfig
from train.envs import make_vector_env
from train.frames import Encode, FrameSource
from train.presets import get_preset
from train.teacher import history

Result = TypeVar("Result")

COLLECTOR_STREAM = 1
"""Mixed into the seed of every collector's random streams, so they never repeat the learner's."""


class EpisodeStarts(NamedTuple):
    """The first observations of new episodes in some lanes.

    ``after`` is the index (within its :class:`Transitions`) of the step that ended the lanes' last
    episodes, or -1 for episodes that began before the first step (a collector's start).
    """

    after: int
    lanes: np.ndarray  # int64 (n,)
    frames: np.ndarray  # (n, *frame_shape)
    proprio: np.ndarray  # float32 (n, P)


class Transitions(NamedTuple):
    """``T`` steps of ``L`` environment lanes, in order, as a replay records them.

    Where a step ended an episode, ``next_frames`` and ``next_proprio`` hold its final observation;
    the next episode's first one is in ``starts``.
    """

    action: np.ndarray  # float32 (T, L, A), in [-1, 1]
    reward: np.ndarray  # float32 (T, L)
    terminated: np.ndarray  # bool (T, L)
    next_frames: np.ndarray  # (T, L, *frame_shape)
    next_proprio: np.ndarray  # float32 (T, L, P)
    starts: tuple[EpisodeStarts, ...]
    episode_returns: tuple[float, ...]  # undiscounted returns of the episodes that ended, in order

    @property
    def steps(self) -> int:
        """Environment steps in this chunk, summed over lanes."""
        return int(self.reward.size)


class Collector(Protocol):
    """Steps environments with the policy it was last given; see the module docstring."""

    lanes: int

    @property
    def time_s(self) -> dict[str, float]:
        """Seconds spent so far stepping environments (rendering included, ``env``) and encoding (``encode``)."""
        ...

    def start(self, seed: int) -> Transitions:
        """Reset every lane (lane ``i`` with ``seed + i``): a chunk of no steps, only episode starts."""
        ...

    def collect(self, steps: int, random_actions: bool) -> Transitions:
        """``steps`` steps of every lane, with uniformly random actions or the policy's sampled ones."""
        ...

    def load_policy(self, weights: PolicyWeights) -> None:
        """Act with these weights from now on."""
        ...

    def reseed(self, seed: int) -> None:
        """Restart the collector's random streams from ``seed``."""
        ...

    def state(self) -> dict[str, Any]:
        """The collector's random state, for checkpoints."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved."""
        ...

    def close(self) -> None:
        """Close the environments."""
        ...


class LocalCollector:
    """A :class:`Collector` in this process.

    It steps ``cfg.num_envs`` environments (one worker process each when more than one), runs the
    frozen encoder batched across them, and acts with a CPU snapshot of the policy.

    Args:
        cfg: the run.
        spec: the run's policy spec.
        encoder: the frozen encoder (``frozen`` runs), for the feature shape of the policy snapshot.
        encode: the frozen encoder as it runs while collecting (onnxruntime or torch).
        seed: the run's seed; the collector's warm-up actions and exploration noise draw from a
            stream of their own derived from it (and from ``index``).
        index: which of several collectors this is.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        spec: PolicySpec,
        encoder: FrozenEncoder | None,
        encode: Encode | None,
        seed: int,
        index: int = 0,
    ) -> None:
        self.lanes = cfg.num_envs
        self.source = FrameSource(cfg.representation, history(cfg, spec), cfg.num_envs, encode)
        self.policy = ActingPolicy(cfg, spec, encoder)
        self.action_dim = spec.action.dim
        self.index = index
        self.rng = np.random.default_rng(0)
        self.generator = torch.Generator()
        self.reseed(seed)
        self.envs = make_vector_env(
            get_preset(cfg.preset), cfg.observation_mode, cfg.num_envs, processes=cfg.num_envs > 1
        )
        self._proprio: np.ndarray | None = None
        self._returns = np.zeros(cfg.num_envs)
        self.time_s = {"env": 0.0, "encode": 0.0}
        """Seconds spent stepping environments (rendering included) and encoding frames."""

    def start(self, seed: int) -> Transitions:
        """See :meth:`Collector.start`."""
        obs, _ = self.envs.reset(seed=seed)
        frames, self._proprio = self.source.frames(obs), FrameSource.proprio(obs)
        lanes = np.arange(self.lanes)
        self.source.reset_lanes(lanes, frames)
        self._returns[:] = 0.0
        empty = np.zeros((0, self.lanes), np.float32)
        return Transitions(
            np.zeros((0, self.lanes, self.action_dim), np.float32),
            empty,
            empty.astype(bool),
            np.zeros((0, self.lanes, *frames.shape[1:]), frames.dtype),
            np.zeros((0, self.lanes, self._proprio.shape[1]), np.float32),
            (EpisodeStarts(-1, lanes, frames, self._proprio),),
            (),
        )

    def collect(self, steps: int, random_actions: bool) -> Transitions:
        """See :meth:`Collector.collect`."""
        if self._proprio is None:
            raise RuntimeError("start the collector before collecting")
        if steps < 1:
            raise ValueError(f"steps is {steps}; collect at least one step")
        actions, rewards, terminations, frames, proprios = [], [], [], [], []
        starts: list[EpisodeStarts] = []
        returns: list[float] = []
        for t in range(steps):
            if random_actions:
                action = self.rng.uniform(-1.0, 1.0, (self.lanes, self.action_dim)).astype(np.float32)
            else:
                action = self.policy.act(self.source.stacked(), self._proprio, self.generator)
            t0 = time.perf_counter()
            obs, reward, terminated, truncated, info = self.envs.step(self.policy.scale(action))
            t1 = time.perf_counter()
            next_frames, next_proprio = self.source.frames(obs), FrameSource.proprio(obs)
            done = terminated | truncated
            stored_frames, stored_proprio = next_frames, next_proprio
            if done.any():
                # The env reset these lanes in this same step: their final observation is in info.
                final = _stack_final(info["final_obs"], done)
                stored_frames, stored_proprio = next_frames.copy(), next_proprio.copy()
                stored_frames[done] = self.source.frames(final)
                stored_proprio[done] = FrameSource.proprio(final)
            self.time_s["encode"] += time.perf_counter() - t1
            self.time_s["env"] += t1 - t0
            self.source.push(next_frames)
            self._returns += reward
            if done.any():
                lanes = np.flatnonzero(done)
                starts.append(EpisodeStarts(t, lanes, next_frames[lanes], next_proprio[lanes]))
                self.source.reset_lanes(lanes, next_frames[lanes])
                returns.extend(float(r) for r in self._returns[lanes])
                self._returns[lanes] = 0.0
            self._proprio = next_proprio
            actions.append(action)
            rewards.append(reward.astype(np.float32))
            terminations.append(terminated)
            frames.append(stored_frames)
            proprios.append(stored_proprio)
        return Transitions(
            np.stack(actions),
            np.stack(rewards),
            np.stack(terminations),
            np.stack(frames),
            np.stack(proprios),
            tuple(starts),
            tuple(returns),
        )

    def reseed(self, seed: int) -> None:
        """Restart the random streams from ``seed`` (apart from the learner's, which uses the seed itself)."""
        streams = np.random.SeedSequence([seed, COLLECTOR_STREAM, self.index])
        self.rng = np.random.default_rng(streams)
        self.generator.manual_seed(int(streams.generate_state(1, np.uint64)[0]))

    def load_policy(self, weights: PolicyWeights) -> None:
        """See :meth:`Collector.load_policy`."""
        self.policy.load(weights)

    def state(self) -> dict[str, Any]:
        """See :meth:`Collector.state`."""
        return {"numpy": self.rng.bit_generator.state, "torch": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """See :meth:`Collector.load_state`."""
        self.rng.bit_generator.state = state["numpy"]
        self.generator.set_state(state["torch"])

    def close(self) -> None:
        """See :meth:`Collector.close`."""
        self.envs.close()


class ThreadCollector:
    """A :class:`Collector` whose every call runs on one thread of its own.

    So a step can be collected while the learner updates (``--collect-ahead``). One thread for
    everything, construction included: an EGL context can be current in one thread only, so the
    environments' renderers must be made, used and closed where they live.

    Args:
        make: builds the collector, on that thread.
    """

    def __init__(self, make: Callable[[], LocalCollector]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector")
        self._inner = self._pool.submit(make).result()
        self.lanes = self._inner.lanes
        self.time_s = self._inner.time_s

    def start(self, seed: int) -> Transitions:
        """See :meth:`Collector.start`."""
        return self._pool.submit(self._inner.start, seed).result()

    def collect(self, steps: int, random_actions: bool) -> Transitions:
        """See :meth:`Collector.collect`."""
        return self._pool.submit(self._inner.collect, steps, random_actions).result()

    def collect_later(self, steps: int, random_actions: bool, then: Callable[[Transitions], Result]) -> Future[Result]:
        """:meth:`collect`, started now, then ``then(transitions)`` on the collector's thread too.

        Returns:
            A future of what ``then`` returns.
        """
        return self._pool.submit(lambda: then(self._inner.collect(steps, random_actions)))

    def load_policy(self, weights: PolicyWeights) -> None:
        """See :meth:`Collector.load_policy` (after any collection already started)."""
        self._pool.submit(self._inner.load_policy, weights).result()

    def reseed(self, seed: int) -> None:
        """See :meth:`Collector.reseed`."""
        self._pool.submit(self._inner.reseed, seed).result()

    def state(self) -> dict[str, Any]:
        """See :meth:`Collector.state`."""
        return self._pool.submit(self._inner.state).result()

    def load_state(self, state: dict[str, Any]) -> None:
        """See :meth:`Collector.load_state`."""
        self._pool.submit(self._inner.load_state, state).result()

    def close(self) -> None:
        """See :meth:`Collector.close`; the thread ends with it."""
        try:
            self._pool.submit(self._inner.close).result()
        finally:
            self._pool.shutdown(wait=True)


def _stack_final(final_obs: Any, done: np.ndarray) -> dict[str, np.ndarray]:
    """The final observations of the lanes in ``done`` (gymnasium gives one dict per lane), as one batch."""
    items = [final_obs[i] for i in np.flatnonzero(done)]
    return {k: np.stack([item[k] for item in items]) for k in items[0]}
