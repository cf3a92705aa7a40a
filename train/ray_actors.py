"""A fixed set of Ray actors that survive their deaths: the plumbing every remote collector shares.

Ray is imported only when a pool is built. The pool starts Ray (a local instance with this machine's
CPUs, or the cluster at an address) unless it already runs in this process, places ``count`` actors
of one class (the CPUs each asks for, restarted by Ray up to :data:`MAX_RESTARTS` times), and sets each up with
one call whose argument may be large (an object-store reference kept for the run, so that a restarted
actor is set up again from it). :meth:`ActorPool.gather` runs one call per actor and returns their
results in order; where an actor died, it waits for Ray's restart, sets the actor up again and asks
the caller to redo that actor's part.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install 'agent-runtime[ray]'"
MAX_RESTARTS = 5
"""How often Ray restarts one actor before the run gives up on it."""
PLACEMENT_TIMEOUT_S = 180.0
"""Most seconds to wait for the actors to start (Ray placing them, then their setup)."""
RECOVERY_TIMEOUT_S = 180.0
"""Most seconds to wait for a dead actor's restart."""


def import_ray() -> ModuleType:
    """Ray, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(f"--collectors runs collectors on Ray, which is not installed: {RAY_INSTALL_HINT}") from exc
    return ray


def _start_ray(ray: ModuleType, address: str | None, count: int, what: str) -> None:
    """Join the Ray cluster at ``address``; unset, do what ``ray.init`` does.

    That is: RAY_ADDRESS, else a cluster started on this node with ``ray start``, else a new local
    instance with the CPUs Ray detects (cgroup and affinity limits included). No CPU count is passed,
    so joining a cluster never conflicts with it.
    """
    where = address or os.environ.get("RAY_ADDRESS") or "a Ray cluster on this node, or a new local instance"
    log.info("starting %d %s on %s", count, what, where)
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)


@contextmanager
def ray_session(address: str | None, count: int, what: str = "collectors") -> Iterator[None]:
    """Ray running for the block, for pools made one after another.

    Started here and stopped after, unless it already runs in this process.
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        _start_ray(ray, address, count, what)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class ActorPool:
    """``count`` actors of ``actor_class`` on Ray; see the module docstring.

    Args:
        actor_class: a plain class with ``ping() -> int`` (its process id) and ``setup(payload) -> int``.
        args_of: the constructor's (small) arguments of actor ``i``.
        count: how many actors.
        payload: what ``setup`` gets (put in the object store once).
        address: the Ray cluster to join; ``None`` starts a local instance.
        what: what the actors are, for messages (``collectors``).
        cpus: CPUs Ray reserves for each actor (an actor stepping several environment processes
            takes one for each).
    """

    def __init__(
        self,
        actor_class: type,
        args_of: Callable[[int], tuple[Any, ...]],
        count: int,
        payload: Any,
        address: str | None,
        what: str = "collectors",
        cpus: int = 1,
    ) -> None:
        ray = import_ray()
        self.ray, self.what = ray, what
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            _start_ray(ray, address, count, what)
        self.restarts = 0
        self.cpus = cpus
        remote_class = ray.remote(num_cpus=cpus, max_restarts=MAX_RESTARTS, max_task_retries=0)(actor_class)
        self._payload = ray.put(payload)  # kept for the run: a restarted actor is set up from it again
        self.actors = [remote_class.remote(*args_of(i)) for i in range(count)]
        self.pids = self._start()

    def _start(self) -> list[int]:
        ray = self.ray
        setups = [actor.setup.remote(self._payload) for actor in self.actors]
        ready, _ = ray.wait(setups, num_returns=len(setups), timeout=PLACEMENT_TIMEOUT_S)
        if len(ready) < len(setups):
            cpus = ray.cluster_resources().get("CPU", 0)
            self.close()
            raise RuntimeError(
                f"only {len(ready)} of {len(setups)} {self.what} started within {PLACEMENT_TIMEOUT_S:.0f} s; each "
                f"takes {self.cpus} CPU(s) and the Ray cluster has {cpus:g}: use fewer --collectors (or --num-envs) "
                "or a larger cluster"
            )
        try:
            return [int(pid) for pid in ray.get(setups)]
        except ray.exceptions.RayError as exc:
            self.close()
            raise RuntimeError(f"one of the {self.what} failed to start on Ray: {exc}") from exc

    def gather(self, calls: Sequence[Any | None], redo: Callable[[int], Any]) -> list[Any]:
        """The results of one call per actor (object references, in actor order).

        Where actor ``i`` died, it is restarted and set up again, then ``redo(i)`` gives its result
        (typically the same call made again); where ``calls[i]`` is ``None``, ``redo(i)`` gives it
        directly. An exception raised by the actor's own code is not a fault to ride out and ends
        the run with a message naming the actor.
        """
        ray, results = self.ray, []
        for i, call in enumerate(calls):
            if call is None:  # the caller has this actor's part made afresh
                results.append(redo(i))
                continue
            try:
                results.append(ray.get(call))
            except ray.exceptions.RayActorError:
                results.append(self._redo_after_revive(i, redo))
            except ray.exceptions.RayTaskError as exc:
                raise RuntimeError(f"{self.what} {i} failed: {exc}") from exc
        return results

    def _redo_after_revive(self, index: int, redo: Callable[[int], Any]) -> Any:
        """Revive actor ``index`` and redo its part; it may die again meanwhile, as often as Ray restarts it."""
        ray = self.ray
        while True:
            self.revive(index)
            try:
                return redo(index)
            except ray.exceptions.RayActorError:
                continue  # died again: revive gives up once Ray stops restarting it
            except ray.exceptions.RayTaskError as exc:
                raise RuntimeError(f"{self.what} {index} failed: {exc}") from exc

    def revive(self, index: int) -> None:
        """Wait for Ray to restart actor ``index`` (after it died) and set it up again; counts the restart."""
        ray = self.ray
        self.restarts += 1
        log.warning(
            "%s %d died; waiting for Ray to restart it (restart %d of the run)", self.what, index, self.restarts
        )
        actor, deadline = self.actors[index], time.monotonic() + RECOVERY_TIMEOUT_S
        while True:
            try:
                ray.get(actor.ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                if time.monotonic() >= deadline or isinstance(exc, ray.exceptions.ActorDiedError):
                    raise RuntimeError(
                        f"{self.what} {index} died and did not come back (Ray restarts each at most "
                        f"{MAX_RESTARTS} times): {exc}"
                    ) from exc
                time.sleep(0.1)  # restarting: ask again shortly
        self.pids[index] = int(ray.get(actor.setup.remote(self._payload)))

    def close(self, closing: str | None = "close") -> None:
        """Call each actor's ``closing`` method (if any), stop the actors, and stop Ray if this pool started it."""
        ray = self.ray
        try:
            if closing is not None:
                calls = [getattr(actor, closing).remote() for actor in self.actors]
                ray.wait(calls, num_returns=len(calls), timeout=30)
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        finally:
            if self.owns_ray:
                ray.shutdown()


class UsesActorPool:
    """What every user of an :class:`ActorPool` reports about it (its pool is ``self._pool``)."""

    _pool: ActorPool

    @property
    def restarts(self) -> int:
        """Actor restarts so far."""
        return self._pool.restarts

    @property
    def pids(self) -> list[int]:
        """The actors' process ids."""
        return self._pool.pids
