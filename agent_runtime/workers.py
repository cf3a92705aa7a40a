"""The inference worker processes behind ``serve --workers N``: what each runs, and how they are kept up.

Each worker is a separate process (so N workers use N cores: one Python interpreter cannot) running
an unchanged :class:`~agent_runtime.policy_server.PolicyServer` whose socket connects to the broker
(:mod:`agent_runtime.broker`) instead of binding. A worker loads the policy file itself and, with
``watch``, swaps in a new one when the file changes, as a single server does. It stops on SIGTERM,
ignores SIGINT (Ctrl-C in a terminal reaches the whole process group; the broker then stops its
workers in order), and stops by itself when the broker process is gone, so a broker killed with -9
leaves no orphans serving nobody.

Processes are started with the ``spawn`` method: a fresh interpreter, never a fork of a process
that holds ZeroMQ sockets, onnxruntime thread pools or locks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NamedTuple

from agent_runtime.policy_server import WorkerLink
from agent_runtime.server_config import ServerConfig

log = logging.getLogger(__name__)

ORPHAN_CHECK_S = 0.5
"""How often a worker checks that its broker process is still there."""
RESTART_BACKOFF_S = (0.5, 30.0)
"""A worker that dies within :data:`STABLE_S` of its start is restarted after a delay that doubles
from the first value up to the second; one that ran longer is restarted at once."""
STABLE_S = 10.0


def worker_main(
    model: str, threads: int, config: ServerConfig, link: WorkerLink, watch: bool, parent_pid: int, log_level: int
) -> None:
    """The body of one worker process (the target of a spawned process; arguments are picklable)."""
    from agent_runtime.onnx_policy import OnnxPolicy, watch_policy_file
    from agent_runtime.policy_server import PolicyServer

    name = link.identity.decode(errors="replace")
    logging.basicConfig(level=log_level, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = PolicyServer(OnnxPolicy(Path(model), threads), replace(config, log_every_s=0.0), worker_of=link)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    stop = threading.Event()
    if watch:
        watch_policy_file(Path(model), server.swap, stop, threads)

    def watch_parent() -> None:
        while not stop.wait(ORPHAN_CHECK_S):
            if os.getppid() != parent_pid:
                log.warning("the broker process %d is gone; stopping", parent_pid)
                server.stop()
                return

    threading.Thread(target=watch_parent, name="broker-watcher", daemon=True).start()
    try:
        server.serve()
    finally:
        stop.set()


class Pending(NamedTuple):
    """A request forwarded to a worker and not yet answered."""

    route: list[bytes]
    request_id: int | None
    client_time_s: float
    is_act: bool
    received_s: float


@dataclass
class Worker:
    """One worker process as the broker sees it."""

    index: int
    """Its slot, 0 to N-1; a restarted worker keeps the slot."""
    identity: bytes
    process: BaseProcess
    started_s: float
    ready: bool = False
    """Set when its ready message arrives; only ready workers are sent requests."""
    pending: dict[bytes, deque[Pending]] = field(default_factory=dict)
    """Forwarded requests not yet answered, by client routing identity, oldest first."""
    outstanding: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    """Its last report: ``requests``, ``errors`` and ``batches`` counters since it started."""

    def add(self, pending: Pending) -> None:
        """Record a request forwarded to this worker."""
        self.pending.setdefault(pending.route[0], deque()).append(pending)
        self.outstanding += 1

    def answered(self, client: bytes, request_id: int | None) -> Pending | None:
        """Take the pending request a reply to ``client`` carrying ``request_id`` answers.

        Matched by id; a reply whose id matches none (the worker could not read it) answers that
        client's oldest pending request, as every forwarded request gets exactly one reply.
        """
        queue = self.pending.get(client)
        if not queue:
            return None
        for i, p in enumerate(queue):
            if p.request_id == request_id:
                del queue[i]
                break
        else:
            p = queue.popleft()
        if not queue:
            del self.pending[client]
        self.outstanding -= 1
        return p

    def take_all_pending(self) -> list[Pending]:
        """Every unanswered request (the worker died), leaving none."""
        out = [p for queue in self.pending.values() for p in queue]
        self.pending.clear()
        self.outstanding = 0
        return out


class WorkerPool:
    """Starts N workers connected to ``link_endpoint``, notices deaths, restarts them with a backoff.

    Args:
        model: the policy file every worker loads (and watches, with ``watch``).
        threads: onnxruntime intra-op threads per worker.
        config: the server settings the workers batch with (their endpoint is not used).
        link_endpoint: the broker's backend endpoint.
        count: number of workers.
        watch: swap in the model file when it changes.
    """

    def __init__(
        self, model: Path, threads: int, config: ServerConfig, link_endpoint: str, count: int, watch: bool
    ) -> None:
        if count < 1:
            raise ValueError(f"workers is {count}; it must be at least 1")
        self._model = str(model)
        self._threads = threads
        self._config = config
        self._link_endpoint = link_endpoint
        self._watch = watch
        self._context = multiprocessing.get_context("spawn")
        self._generation = 0
        self._backoff_s = [0.0] * count
        self._restart_at: dict[int, float] = {}
        self.restarts = 0
        self.workers: dict[bytes, Worker] = {}
        self._count = count
        self.retired: dict[str, Counter[str]] = {"requests": Counter(), "errors": Counter(), "batches": Counter()}
        """The last reported counts of workers that have died, so totals survive restarts."""

    @property
    def count(self) -> int:
        """How many workers the pool keeps running."""
        return self._count

    def start_all(self) -> None:
        """Start every worker (they report ready to the broker by themselves)."""
        for index in range(self._count):
            self._start(index)

    def _start(self, index: int) -> Worker:
        self._generation += 1
        identity = f"worker-{index}.{self._generation}".encode()
        link = WorkerLink(self._link_endpoint, identity)
        level = logging.getLogger().getEffectiveLevel()
        args = (self._model, self._threads, self._config, link, self._watch, os.getpid(), level)
        process = self._context.Process(target=worker_main, args=args, name=identity.decode(), daemon=True)
        process.start()
        worker = Worker(index, identity, process, time.monotonic())
        self.workers[identity] = worker
        return worker

    def reap(self) -> list[Worker]:
        """The workers that have exited since the last call (removed from the pool, restart scheduled)."""
        now = time.monotonic()
        dead = [w for w in self.workers.values() if not w.process.is_alive()]
        for worker in dead:
            del self.workers[worker.identity]
            for key, counts in worker.counts.items():
                self.retired[key].update(counts)
            low, high = RESTART_BACKOFF_S
            quick = now - worker.started_s < STABLE_S
            delay = min(high, max(low, 2 * self._backoff_s[worker.index])) if quick else 0.0
            self._backoff_s[worker.index] = delay
            self._restart_at[worker.index] = now + delay
            log.error(
                "%s exited with code %s after %.1f s; restarting it%s",
                worker.identity.decode(), worker.process.exitcode, now - worker.started_s,
                f" in {delay:.1f} s" if delay else "",
            )  # fmt: skip
        return dead

    def restart_due(self) -> list[Worker]:
        """Start the workers whose restart time has come; returns them."""
        now = time.monotonic()
        due = [i for i, at in self._restart_at.items() if at <= now]
        started = []
        for index in due:
            del self._restart_at[index]
            self.restarts += 1
            started.append(self._start(index))
        return started

    def totals(self) -> dict[str, Counter[str]]:
        """Every worker's reported counts, the dead ones' included."""
        out = {key: Counter(counts) for key, counts in self.retired.items()}
        for worker in self.workers.values():
            for key, counts in worker.counts.items():
                out[key].update(counts)
        return out

    def stop_all(self, timeout_s: float = 5.0) -> None:
        """SIGTERM every worker, wait up to ``timeout_s`` in all, then kill what is left."""
        for worker in self.workers.values():
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + timeout_s
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.warning("%s did not stop on SIGTERM; killing it", worker.identity.decode())
                worker.process.kill()
                worker.process.join(timeout_s)

    def describe(self) -> dict[str, Any]:
        """``{"count", "ready", "restarts"}`` for a stats reply."""
        return {
            "count": self._count,
            "ready": sum(w.ready for w in self.workers.values()),
            "restarts": self.restarts,
        }
