"""Collectors on Ray actors: more simulators, on more cores or machines, feeding one learner.

``train --collectors N`` runs N :class:`~train.collector.LocalCollector` s, each in a Ray actor of its
own (one CPU each) with its own environments, renderer and frozen encoder. They are driven in rounds:
every actor steps its environments ``cfg.round_steps`` times with the policy weights it was last sent
and returns its :class:`~train.collector.Transitions`; the round's parts are joined lane by lane (actor
``i`` owns replay lanes ``i * num_envs`` to ``(i + 1) * num_envs - 1``, so episodes never mix). The
runner starts each round before the learner's updates on the last one and waits for it after them
(:meth:`RayCollectors.collect_later`), so collection and learning overlap and the policy a collector
acts with is at most one round of updates old (``cfg.max_policy_lag`` bounds that).

Weights go out through Ray's object store, put once per version and sent with a round only to the
actors that lack them. Ray is imported only when this class is built: in-process training never needs it.

Faults: an actor that dies (killed, its node lost) is restarted by Ray (``MAX_RESTARTS`` times each);
the round collects that actor's part again from fresh episodes, so the run loses the actor's unfinished
episodes and nothing else, and :attr:`RayCollectors.restarts` counts the restarts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import torch

from agent_runtime.spec import PolicySpec
from models.encoder import FrozenEncoder
from train.acting import PolicyWeights
from train.collector import EpisodeStarts, LocalCollector, Transitions
from train.config import TrainConfig
from train.encoding import encode_function
from train.teacher import build_encoder

log = logging.getLogger(__name__)

Result = TypeVar("Result")

RAY_INSTALL_HINT = "pip install 'agent-runtime[ray]'"
MAX_RESTARTS = 5
"""How often Ray restarts one collector actor before the run gives up on it."""
PLACEMENT_TIMEOUT_S = 180.0
"""Most seconds to wait for the collectors to start (Ray placing them, building envs and encoders)."""
RECOVERY_TIMEOUT_S = 180.0
"""Most seconds to wait for a dead collector's restart."""


def import_ray() -> ModuleType:
    """Ray, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(f"--collectors runs collectors on Ray, which is not installed: {RAY_INSTALL_HINT}") from exc
    return ray


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


class RayCollectors:
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
        ray = import_ray()
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            where = cfg.ray_address or f"a local Ray instance with {os.cpu_count()} CPUs"
            log.info("starting %d collectors on %s", cfg.collectors, where)
            ray.init(
                address=cfg.ray_address,
                num_cpus=None if cfg.ray_address else os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        self.lanes = cfg.lanes
        self.round_steps = cfg.round_steps
        self.restarts = 0
        self._per_actor = cfg.num_envs
        self._seed = seed
        self._actor_class = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=0)(CollectorActor)
        # Kept for the run: a restarted actor is set up from it again.
        self._encoder_state = ray.put(encoder.state_dict()) if encoder is not None else None
        self._actors = [self._actor_class.remote(cfg, spec, seed, i) for i in range(cfg.collectors)]
        self._weights: Any = None  # the newest weights' object ref
        self._version = 0
        self._sent = [0] * cfg.collectors  # the version each actor acts with
        self._times = [{"env": 0.0, "encode": 0.0} for _ in self._actors]
        self._retired = {"env": 0.0, "encode": 0.0}  # the time of actors that died
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-collectors")
        self._wait_ready(cfg)

    def _wait_ready(self, cfg: TrainConfig) -> None:
        ray = self._ray
        pings = [actor.setup.remote(self._encoder_state) for actor in self._actors]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=PLACEMENT_TIMEOUT_S)
        if len(ready) < len(pings):
            cpus = ray.cluster_resources().get("CPU", 0)
            self.close()
            raise RuntimeError(
                f"only {len(ready)} of {cfg.collectors} collectors started within {PLACEMENT_TIMEOUT_S:.0f} s; each "
                f"takes one CPU and the Ray cluster has {cpus:g}: use fewer --collectors or a larger cluster"
            )
        try:
            self.pids = ray.get(pings)
        except ray.exceptions.RayError as exc:
            self.close()
            raise RuntimeError(f"a collector failed to start on Ray: {exc}") from exc

    @property
    def time_s(self) -> dict[str, float]:
        """Seconds the collectors spent stepping environments and encoding, summed over them."""
        return {k: self._retired[k] + sum(t[k] for t in self._times) for k in self._retired}

    def start(self, seed: int) -> Transitions:
        """Reset every lane: actor ``i``'s lane ``j`` with ``seed + i * num_envs + j``."""
        calls = [actor.start.remote(seed + i * self._per_actor) for i, actor in enumerate(self._actors)]
        return self._join([self._result(i, call, lambda i: self._recover(i, None)) for i, call in enumerate(calls)])

    def collect(self, steps: int, random_actions: bool) -> Transitions:
        """One round: ``steps`` steps of every actor's environments, joined lane by lane."""
        calls = []
        for i, actor in enumerate(self._actors):
            fresh = self._weights if self._sent[i] != self._version else None
            calls.append(actor.collect.remote(steps, random_actions, fresh))
            self._sent[i] = self._version
        parts = [
            self._result(i, call, lambda i: self._recover(i, (steps, random_actions))) for i, call in enumerate(calls)
        ]
        return self._join(parts)

    def collect_later(self, steps: int, random_actions: bool, then: Callable[[Transitions], Result]) -> Future[Result]:
        """:meth:`collect` started now, then ``then(transitions)``, on a thread of this object's."""
        return self._pool.submit(lambda: then(self.collect(steps, random_actions)))

    def load_policy(self, weights: PolicyWeights) -> None:
        """Act with these weights from the next round on (put in the object store once)."""
        self._weights = self._ray.put(weights)
        self._version += 1

    def reseed(self, seed: int) -> None:
        """Restart every actor's random streams from ``seed`` (each apart by its index)."""
        self._ray.get([actor.reseed.remote(seed) for actor in self._actors])

    def state(self) -> dict[str, Any]:
        """Every actor's random state, for checkpoints."""
        return {"remote": self._ray.get([actor.state.remote() for actor in self._actors])}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved (from a run with as many collectors)."""
        saved = state.get("remote")
        if not isinstance(saved, list) or len(saved) != len(self._actors):
            raise ValueError(f"the saved collector state is not that of {len(self._actors)} remote collectors")
        self._ray.get([actor.load_state.remote(s) for actor, s in zip(self._actors, saved, strict=True)])

    def close(self) -> None:
        """Stop the actors (and Ray, when this object started it)."""
        ray = self._ray
        try:
            closing = [actor.close.remote() for actor in self._actors]
            ray.wait(closing, num_returns=len(closing), timeout=30)
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
        finally:
            self._pool.shutdown(wait=True)
            if self._owns_ray:
                ray.shutdown()

    # -- rounds and faults --------------------------------------------------------------------------

    def _result(self, index: int, call: Any, recover: Callable[[int], Transitions]) -> Transitions:
        """An actor's part of a round, or, when the actor died, the part collected again after its restart."""
        ray = self._ray
        try:
            part, times = ray.get(call)
        except ray.exceptions.RayActorError:
            return recover(index)
        except ray.exceptions.RayTaskError as exc:  # our code failed in the actor: not a fault to ride out
            raise RuntimeError(f"collector {index} failed: {exc}") from exc
        self._times[index] = times
        return part

    def _recover(self, index: int, collect: tuple[int, bool] | None) -> Transitions:
        """Wait for Ray to restart actor ``index``, start fresh episodes there, then collect its part again."""
        ray = self._ray
        self.restarts += 1
        self._retired = {k: self._retired[k] + self._times[index][k] for k in self._retired}
        self._times[index] = {"env": 0.0, "encode": 0.0}
        log.warning("collector %d died; waiting for Ray to restart it (restart %d of the run)", index, self.restarts)
        actor, deadline = self._actors[index], time.monotonic() + RECOVERY_TIMEOUT_S
        while True:
            try:
                self.pids[index] = ray.get(actor.ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                if time.monotonic() >= deadline or isinstance(exc, ray.exceptions.ActorDiedError):
                    raise RuntimeError(
                        f"collector {index} died and did not come back (Ray restarts each collector at most "
                        f"{MAX_RESTARTS} times): {exc}"
                    ) from exc
        self.pids[index] = ray.get(actor.setup.remote(self._encoder_state))
        # Fresh random streams and episodes: the restarted actor must not replay its first ones.
        streams = np.random.SeedSequence([self._seed, self.restarts, index]).generate_state(2)
        ray.get(actor.reseed.remote(int(streams[0])))
        start, _ = ray.get(actor.start.remote(int(streams[1] % 2**31)))
        self._sent[index] = 0
        if collect is None:
            return start
        steps, random_actions = collect
        self._sent[index] = self._version
        part, times = ray.get(actor.collect.remote(steps, random_actions, self._weights))
        self._times[index] = times
        return part._replace(starts=(*start.starts, *part.starts))

    def _join(self, parts: list[Transitions]) -> Transitions:
        """The actors' parts as one round of all lanes; starts at the same step are merged."""
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
