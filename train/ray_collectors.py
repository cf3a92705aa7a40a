"""Collectors on Ray actors: more simulators, on more cores or machines, feeding one learner.

``train --collectors N`` runs N :class:`~train.collector.LocalCollector` s, each in a Ray actor of its
own (``num_envs`` CPUs each) with its own environments, renderer and frozen encoder. They are driven in rounds:
every actor steps its environments ``cfg.round_steps`` times with the policy weights it was last sent
and returns its :class:`~train.collector.Transitions`; the round's parts are joined lane by lane (actor
``i`` owns replay lanes ``i * num_envs`` to ``(i + 1) * num_envs - 1``, so episodes never mix). The
runner starts each round before the learner's updates on the last one and waits for it after them
(:meth:`RayCollectors.collect_later`), so collection and learning overlap and the policy a collector
acts with is at most one round of updates old (``cfg.max_policy_lag`` bounds that).

Weights go out through Ray's object store, put once per version and sent with a round only to the
actors that lack them. Ray is imported only when this class is built: in-process training never needs it.

Faults: an actor that dies (killed, its node lost) is restarted by Ray (``train.ray_actors.MAX_RESTARTS``);
the round collects that actor's part again from fresh episodes, so the run loses the actor's unfinished
episodes and nothing else, and :attr:`RayCollectors.restarts` counts the restarts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from agent_runtime.spec import PolicySpec
from models.encoder import FrozenEncoder
from train.acting import PolicyWeights
from train.collector import EpisodeStarts, LocalCollector, Transitions
from train.config import TrainConfig
from train.encoding import encode_function
from train.ray_actors import ActorPool, UsesActorPool
from train.teacher import build_encoder

log = logging.getLogger(__name__)

Result = TypeVar("Result")


class CollectorActor:
    """One collector in a Ray worker process (wrapped by ``ray.remote`` in :class:`RayCollectors`).

    Built in two calls: the constructor takes only small arguments (so Ray can restart the actor from
    them alone), then :meth:`setup` takes the frozen encoder as the driver's state dict, so a remote
    node needs no weights of its own; its ONNX export goes to a temporary directory of the worker.
    """

    def __init__(self, cfg: TrainConfig, spec: PolicySpec, seed: int, index: int) -> None:
        torch.set_num_threads(1)
        self._cfg, self._spec, self._seed, self._index = dataclasses.replace(cfg, threads=1), spec, seed, index
        self._tmp = tempfile.TemporaryDirectory(prefix="agent-runtime-collector-")
        self._collector: LocalCollector | None = None

    def setup(self, encoder_state: dict[str, torch.Tensor] | None) -> int:
        """Build the environments, the encoder (from ``encoder_state``) and the policy; returns the process id."""
        cfg, encoder = self._cfg, None
        if encoder_state is not None:
            unloaded = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights="none"))
            encoder = build_encoder(unloaded)
            if encoder is None:
                raise RuntimeError("an encoder's weights were sent to a collector of a run without one")
            encoder.load_state_dict(encoder_state)
        encode = encode_function(cfg, encoder, self._spec, torch.device("cpu"), Path(self._tmp.name))
        self._collector = LocalCollector(cfg, self._spec, encoder, encode, seed=self._seed, index=self._index)
        return os.getpid()

    @property
    def collector(self) -> LocalCollector:
        """The collector :meth:`setup` built."""
        if self._collector is None:
            raise RuntimeError("collector actor used before setup")
        return self._collector

    def ping(self) -> int:
        """The worker's process id (a liveness probe)."""
        return os.getpid()

    def start(self, seed: int) -> tuple[Transitions, dict[str, float]]:
        """:meth:`LocalCollector.start`, with the collector's time so far."""
        return self.collector.start(seed), dict(self.collector.time_s)

    def collect(
        self, steps: int, random_actions: bool, weights: PolicyWeights | None
    ) -> tuple[Transitions, dict[str, float]]:
        """Load ``weights`` (when sent), then :meth:`LocalCollector.collect`, with the collector's time so far."""
        if weights is not None:
            self.collector.load_policy(weights)
        return self.collector.collect(steps, random_actions), dict(self.collector.time_s)

    def reseed(self, seed: int) -> None:
        """:meth:`LocalCollector.reseed`."""
        self.collector.reseed(seed)

    def state(self) -> dict[str, Any]:
        """:meth:`LocalCollector.state`."""
        return self.collector.state()

    def load_state(self, state: dict[str, Any]) -> None:
        """:meth:`LocalCollector.load_state`."""
        self.collector.load_state(state)

    def close(self) -> None:
        """Close the environments and remove the encoder's export."""
        if self._collector is not None:
            self._collector.close()
        self._tmp.cleanup()


class RayCollectors(UsesActorPool):
    """``cfg.collectors`` collectors on Ray actors, behind the :class:`~train.collector.Collector` interface.

    Ray is started here (a local instance with this machine's CPUs, or the cluster at
    ``cfg.ray_address``) unless it already runs in this process; :meth:`close` stops what it started.

    Args:
        cfg: the run (``collectors``, ``num_envs``, ``round_steps``, ``ray_address``).
        spec: the run's policy spec.
        encoder: the frozen encoder (``frozen`` runs); its weights are sent to every actor.
        seed: the run's seed; actor ``i`` draws from the stream of collector index ``i``.
    """

    def __init__(self, cfg: TrainConfig, spec: PolicySpec, encoder: FrozenEncoder | None, seed: int) -> None:
        self.lanes = cfg.lanes
        self.round_steps = cfg.round_steps
        self._per_actor = cfg.num_envs
        self._seed = seed
        state = encoder.state_dict() if encoder is not None else None
        args = (cfg, spec, seed)
        self._pool = ActorPool(
            CollectorActor, lambda i: (*args, i), cfg.collectors, state, cfg.ray_address, cpus=cfg.num_envs
        )
        self._ray = self._pool.ray
        self._weights: Any = None  # the newest weights' object ref
        self._version = 0
        self._sent = [0] * cfg.collectors  # the version each actor acts with
        self._times = [{"env": 0.0, "encode": 0.0} for _ in range(cfg.collectors)]
        self._retired = {"env": 0.0, "encode": 0.0}  # the time of actors that died
        self._unstarted: set[int] = set()  # actors restarted outside a round: their next part starts afresh
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-collectors")

    @property
    def time_s(self) -> dict[str, float]:
        """Seconds the collectors spent stepping environments and encoding, summed over them."""
        return {k: self._retired[k] + sum(t[k] for t in self._times) for k in self._retired}

    def start(self, seed: int) -> Transitions:
        """Reset every lane: actor ``i``'s lane ``j`` with ``seed + i * num_envs + j``."""
        actors = self._pool.actors
        self._unstarted.clear()  # every actor starts its episodes here
        calls = [actor.start.remote(seed + i * self._per_actor) for i, actor in enumerate(actors)]
        return self._join(self._pool.gather(calls, lambda i: self._fresh(i, None)))

    def collect(self, steps: int, random_actions: bool) -> Transitions:
        """One round: ``steps`` steps of every actor's environments, joined lane by lane."""
        calls: list[Any] = []
        for i, actor in enumerate(self._pool.actors):
            if i in self._unstarted:
                calls.append(None)  # restarted since the last round: its part starts with fresh episodes
                continue
            fresh = self._weights if self._sent[i] != self._version else None
            calls.append(actor.collect.remote(steps, random_actions, fresh))
            self._sent[i] = self._version
        parts = self._pool.gather(calls, lambda i: self._fresh(i, (steps, random_actions)))
        self._unstarted.clear()
        return self._join(parts)

    def collect_later(self, steps: int, random_actions: bool, then: Callable[[Transitions], Result]) -> Future[Result]:
        """:meth:`collect` started now, then ``then(transitions)``, on a thread of this object's."""
        return self._thread.submit(lambda: then(self.collect(steps, random_actions)))

    def load_policy(self, weights: PolicyWeights) -> None:
        """Act with these weights from the next round on (put in the object store once)."""
        self._weights = self._ray.put(weights)
        self._version += 1

    def reseed(self, seed: int) -> None:
        """Restart every actor's random streams from ``seed`` (each apart by its index)."""
        self._each("reseed", [(seed,)] * len(self._pool.actors))

    def state(self) -> dict[str, Any]:
        """Every actor's random state, for checkpoints."""
        return {"remote": self._each("state", [()] * len(self._pool.actors))}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved (from a run with as many collectors)."""
        saved, actors = state.get("remote"), self._pool.actors
        if not isinstance(saved, list) or len(saved) != len(actors):
            raise ValueError(f"the saved collector state is not that of {len(actors)} remote collectors")
        self._each("load_state", [(s,) for s in saved])

    def _each(self, method: str, args: list[tuple[Any, ...]]) -> list[Any]:
        """``method(*args[i])`` on every actor; one that died is restarted, asked again, and starts afresh."""
        actors = self._pool.actors

        def again(i: int) -> Any:
            self._unstarted.add(i)
            self._retire(i)
            return self._ray.get(getattr(actors[i], method).remote(*args[i]))

        return self._pool.gather([getattr(a, method).remote(*args[i]) for i, a in enumerate(actors)], again)

    def close(self) -> None:
        """Stop the actors (and Ray, when this object started it)."""
        try:
            self._thread.shutdown(wait=True)  # a round in flight ends first: no actor is closed under it
        finally:
            self._pool.close()

    def _fresh(self, index: int, collect: tuple[int, bool] | None) -> tuple[Transitions, dict[str, float]]:
        """Actor ``index``'s part again, after its restart: fresh random streams, fresh episodes.

        The restarted actor must not replay its first episodes, nor draw its first random numbers again.
        """
        ray, actor = self._ray, self._pool.actors[index]
        self._retire(index)
        streams = np.random.SeedSequence([self._seed, self.restarts, index]).generate_state(2)
        ray.get(actor.reseed.remote(int(streams[0])))
        start, times = ray.get(actor.start.remote(int(streams[1] % 2**31)))
        self._sent[index] = 0
        if collect is None:
            return start, times
        steps, random_actions = collect
        self._sent[index] = self._version
        part, times = ray.get(actor.collect.remote(steps, random_actions, self._weights))
        return part._replace(starts=(*start.starts, *part.starts)), times

    def _retire(self, index: int) -> None:
        """Keep the time of actor ``index``'s life that ended (its restart starts counting from zero)."""
        self._retired = {k: self._retired[k] + self._times[index][k] for k in self._retired}
        self._times[index] = {"env": 0.0, "encode": 0.0}

    def _join(self, results: list[tuple[Transitions, dict[str, float]]]) -> Transitions:
        """The actors' parts as one round of all lanes; starts at the same step are merged."""
        for i, (_, times) in enumerate(results):
            self._times[i] = times
        parts = [part for part, _ in results]
        by_step: dict[int, list[EpisodeStarts]] = {}
        for i, part in enumerate(parts):
            for s in part.starts:
                by_step.setdefault(s.after, []).append(s._replace(lanes=s.lanes + i * self._per_actor))
        starts = tuple(
            EpisodeStarts(
                after,
                np.concatenate([s.lanes for s in group]),
                np.concatenate([s.frames for s in group]),
                np.concatenate([s.proprio for s in group]),
            )
            for after, group in sorted(by_step.items())
        )
        return Transitions(
            np.concatenate([p.action for p in parts], axis=1),
            np.concatenate([p.reward for p in parts], axis=1),
            np.concatenate([p.terminated for p in parts], axis=1),
            np.concatenate([p.next_frames for p in parts], axis=1),
            np.concatenate([p.next_proprio for p in parts], axis=1),
            starts,
            tuple(r for p in parts for r in p.episode_returns),
        )
