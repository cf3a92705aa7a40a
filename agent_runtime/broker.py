"""``serve --workers N``: one public endpoint, N inference processes behind it.

The broker owns the socket robots connect to (the same ROUTER, size cap and CURVE settings as a
single server) and a second ROUTER on a host-local endpoint that its workers
(:mod:`agent_runtime.workers`) connect to. It forwards each request unchanged, client routing frame
included, to the ready worker with the fewest requests outstanding, and each reply back to its
client. So a worker batches, checks deadlines and estimates per-client queueing exactly as a single
server does, and a client cannot tell the difference.

What the broker does itself:
- it answers ``stats`` for all workers: their request, error and batch counts (reported by each
  about twice a second, kept across restarts) with the act latency the broker measures from reading
  a request to forwarding its reply, and a ``workers`` entry (count, ready, restarts);
- it keeps, per worker, the requests forwarded and not yet answered. When a worker process dies,
  each of them gets a ``policy_error`` reply (every request still gets exactly one reply), the worker
  is restarted, and until it is ready the others take its share;
- it reads no request from robots until at least one worker is ready (they wait in the socket).

Hot swap works as in a single server: each worker watches the policy file and swaps it in, so for
about a second after the file is replaced the workers may serve different versions; every reply
carries the ``spec_hash`` of the policy that made it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from agent_runtime import protocol
from agent_runtime.frames import recv_frames, send_frames, split_route
from agent_runtime.policy_server import bind_router
from agent_runtime.protocol import Code, Message, ProtocolError
from agent_runtime.server_config import ServerConfig, default_max_message_bytes
from agent_runtime.spec import PolicySpec
from agent_runtime.stats import ServerStats
from agent_runtime.workers import Pending, Worker, WorkerPool

log = logging.getLogger(__name__)

_POLL_MS = 50
_BURST = 256  # most messages read from one socket before the other gets a turn
_CHECK_S = 0.05  # how often worker processes are checked for death and restarts
_EMPTY = protocol.Peek(None, None, 0.0, {})


class Broker:
    """Serves ``model`` on ``config.endpoint`` with ``workers`` inference processes.

    Args:
        model: the exported policy file; every worker loads it (and watches it, with ``watch``).
        spec: its spec (the caller has loaded the file once, so a bad file fails before any worker starts).
        config: the public socket's settings, and the batching every worker uses.
        workers: number of worker processes.
        threads: onnxruntime intra-op threads per worker.
        watch: swap in the model file when it changes.
        start_timeout_s: longest wait for every worker's first ready message.
    """

    def __init__(
        self,
        model: Path,
        spec: PolicySpec,
        config: ServerConfig,
        workers: int,
        threads: int = 1,
        watch: bool = True,
        start_timeout_s: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers is {workers}; it must be at least 1")
        self.config = config
        self.stats = ServerStats()
        """What the broker itself observed: act latency, its own ``stats`` requests and errors."""
        self._model = model
        self._spec = spec
        self._spec_hash = spec.interface_hash()
        self._cap = config.max_message_bytes or default_max_message_bytes(spec)
        self._workers = workers
        self._threads = threads
        self._watch = watch
        self._start_timeout_s = start_timeout_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._endpoint: str | None = None
        self._pool: WorkerPool | None = None
        self._turn = 0

    @property
    def endpoint(self) -> str:
        """The bound public endpoint (with the port chosen, for ``tcp://HOST:*``)."""
        if self._endpoint is None:
            raise RuntimeError("the broker is not serving yet; wait_ready() first")
        return self._endpoint

    def stop(self) -> None:
        """Ask the broker to stop: it then stops its workers and closes (thread- and signal-safe)."""
        self._stop.set()

    def wait_ready(self, timeout_s: float) -> str:
        """Block until bound with every worker ready (at most ``timeout_s``); returns the endpoint."""
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the broker on {self.config.endpoint} was not ready within {timeout_s} s")
        if self._endpoint is None:
            raise RuntimeError(f"the broker failed before serving {self.config.endpoint}")
        return self._endpoint

    def snapshot(self) -> dict[str, Any]:
        """The ``stats`` reply's map for the whole server: every worker's counts and the broker's latency."""
        merged = ServerStats()
        merged.started_s = self.stats.started_s
        merged.latency = self.stats.latency
        merged.requests.update(self.stats.requests)
        merged.errors.update(self.stats.errors)
        if self._pool is not None:
            totals = self._pool.totals()
            merged.requests.update(totals["requests"])
            merged.errors.update(totals["errors"])
            merged.batches.update({int(k): v for k, v in totals["batches"].items()})
        snapshot = merged.snapshot()
        snapshot["workers"] = self._pool.describe() if self._pool is not None else {"count": self._workers}
        return snapshot

    def line(self) -> str:
        """One log line of the whole server's statistics."""
        merged = self.snapshot()
        pool = merged["workers"]
        requests = sum(merged["requests"].values())
        errors = sum(merged["errors"].values())
        latency = merged["latency"]
        return (
            f"{requests} requests, {errors} errors, act p50 {latency['p50_ms']:.2f} ms p99 {latency['p99_ms']:.2f} ms, "
            f"mean batch {merged['batches']['mean']:.1f}; workers {pool.get('ready', 0)} of {self._workers} ready, "
            f"{pool.get('restarts', 0)} restarts"
        )

    # -- running ------------------------------------------------------------------------------------

    def serve(self) -> None:
        """Bind, start the workers, serve until :meth:`stop`; then stop the workers and close."""
        context: zmq.Context[Any] = zmq.Context()
        authenticator = None
        front = back = None
        link_dir = tempfile.mkdtemp(prefix="agent-runtime-broker-")
        try:
            if self.config.curve_secret_key is not None:
                from agent_runtime.keys import start_authenticator

                authenticator = start_authenticator(context, self.config.authorized_keys)
            front = bind_router(context, self.config, self._cap)
            back = self._bind_backend(context, link_dir)
            self._pool = WorkerPool(
                self._model, self._threads, self.config, back.getsockopt_string(zmq.LAST_ENDPOINT),
                self._workers, self._watch,
            )  # fmt: skip
            self._pool.start_all()
            self._await_workers(back, self._pool)
            self._endpoint = front.getsockopt_string(zmq.LAST_ENDPOINT)
            self._ready.set()
            log.info("serving %s on %s with %d workers", self._model, self._endpoint, self._workers)
            self._loop(front, back, self._pool)
        finally:
            if self._pool is not None:
                self._pool.stop_all()
            for sock in (front, back):
                if sock is not None:
                    sock.close(linger=0)
            if authenticator is not None:
                authenticator.stop()
            context.term()
            shutil.rmtree(link_dir, ignore_errors=True)
            self._ready.set()
            if self._endpoint is not None:
                log.info("stopped; %s", self.line())

    def _bind_backend(self, context: zmq.Context[Any], link_dir: str) -> zmq.Socket[Any]:
        back = context.socket(zmq.ROUTER)
        try:
            back.setsockopt(zmq.LINGER, 0)
            back.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a worker that is gone raises, not drops
            back.setsockopt(zmq.SNDHWM, 0)
            back.setsockopt(zmq.RCVHWM, 0)
            if os.name == "posix":
                os.chmod(link_dir, 0o700)  # only this user's processes can reach the workers
                back.bind(f"ipc://{link_dir}/workers")
            else:
                back.bind("tcp://127.0.0.1:*")
        except BaseException:
            back.close(linger=0)
            raise
        return back

    def _await_workers(self, back: zmq.Socket[Any], pool: WorkerPool) -> None:
        """Wait for every worker's ready message; a worker that dies first ends the start-up."""
        deadline = time.monotonic() + self._start_timeout_s
        while not all(w.ready for w in pool.workers.values()):
            if self._stop.is_set():
                return
            for worker in pool.workers.values():
                if not worker.process.is_alive():
                    raise RuntimeError(
                        f"inference worker {worker.index} exited with code {worker.process.exitcode} before it was "
                        "ready; its error is in the log above"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the inference workers were not all ready within {self._start_timeout_s} s "
                    f"({sum(w.ready for w in pool.workers.values())} of {pool.count}); is the machine overloaded?"
                )
            if back.poll(_POLL_MS, zmq.POLLIN):
                self._from_worker(None, recv_frames(back), pool)

    def _loop(self, front: zmq.Socket[Any], back: zmq.Socket[Any], pool: WorkerPool) -> None:
        poller = zmq.Poller()
        poller.register(back, zmq.POLLIN)
        reading_front = False
        next_check = next_log = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_check:
                self._check_workers(front, pool)
                next_check = now + _CHECK_S
            if self.config.log_every_s and now >= next_log:
                if now > self.stats.started_s + 1:  # not at start-up
                    log.info("%s", self.line())
                next_log = now + self.config.log_every_s
            # Robots' requests wait in the public socket while no worker can take them.
            want_front = any(w.ready for w in pool.workers.values())
            if want_front != reading_front:
                if want_front:
                    poller.register(front, zmq.POLLIN)
                else:
                    poller.unregister(front)
                reading_front = want_front
            events = dict(poller.poll(_POLL_MS))
            if back in events:
                _drain(back, lambda frames: self._from_worker(front, frames, pool))
            if front in events:
                _drain(front, lambda frames: self._from_client(front, back, frames, pool))

    # -- messages -----------------------------------------------------------------------------------

    def _from_client(
        self, front: zmq.Socket[Any], back: zmq.Socket[Any], frames: list[bytes], pool: WorkerPool
    ) -> None:
        received = time.monotonic()
        route, body = split_route(frames)
        peeked = protocol.peek(body[0]) if body else _EMPTY
        if peeked.type == protocol.STATS:
            self._answer_stats(front, route, body, received)
            return
        pending = Pending(route, peeked.request_id, peeked.client_time_s, peeked.type == protocol.ACT, received)
        while (worker := self._pick(pool)) is not None:
            try:
                send_frames(back, [worker.identity, *frames])
            except zmq.ZMQError:  # the worker's connection is gone (it is being reaped): try another
                worker.ready = False
                continue
            worker.add(pending)
            return
        self._error(front, pending, Code.POLICY_ERROR, "no inference worker is running; the server is restarting them")

    def _pick(self, pool: WorkerPool) -> Worker | None:
        """The ready worker with the fewest requests outstanding (ties taken in turn)."""
        ready = [w for w in pool.workers.values() if w.ready]
        if not ready:
            return None
        self._turn = (self._turn + 1) % len(ready)
        ordered = ready[self._turn :] + ready[: self._turn]
        return min(ordered, key=lambda w: w.outstanding)

    def _from_worker(self, front: zmq.Socket[Any] | None, frames: list[bytes], pool: WorkerPool) -> None:
        worker = pool.workers.get(frames[0])
        rest = frames[1:]
        if worker is None:
            return  # a reply from a worker already reaped: its requests were answered with errors
        if len(rest) == 1:
            self._control(worker, rest[0])
            return
        _, reply = split_route(rest)  # rest is the client's route, then the reply
        peeked = protocol.peek(reply[0]) if reply else _EMPTY
        pending = worker.answered(rest[0], peeked.request_id)
        spec_hash = peeked.header.get("spec_hash")
        if isinstance(spec_hash, str):
            self._spec_hash = spec_hash
        if pending is not None and pending.is_act and peeked.type == protocol.ACT:
            self.stats.latency.add(time.monotonic() - pending.received_s)
        if front is not None:
            send_frames(front, rest)

    def _control(self, worker: Worker, frame: bytes) -> None:
        try:
            report = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        except Exception:  # a worker is our own code; a frame it cannot have sent is logged, not fatal
            log.error("%s sent an unreadable control frame", worker.identity.decode())
            return
        kind = report.get("worker") if isinstance(report, dict) else None
        if kind == "ready":
            worker.ready = True
            log.info("%s ready (pid %s)", worker.identity.decode(), report.get("pid"))
        elif kind == "stats":
            worker.counts = {key: Counter(report.get(key) or {}) for key in ("requests", "errors", "batches")}

    def _check_workers(self, front: zmq.Socket[Any], pool: WorkerPool) -> None:
        for worker in pool.reap():
            lost = worker.take_all_pending()
            code = worker.process.exitcode
            for pending in lost:
                self._error(
                    front, pending, Code.POLICY_ERROR,
                    f"the inference worker serving this request stopped (exit code {code}); send it again",
                )  # fmt: skip
        pool.restart_due()

    def _answer_stats(self, front: zmq.Socket[Any], route: list[bytes], body: list[bytes], received: float) -> None:
        try:
            request = protocol.decode(body, self._cap, protocol.REQUEST_TYPES)
        except ProtocolError as exc:
            self.stats.errors[exc.code] += 1
            self._send(front, route, protocol.error_reply(exc), received)
            return
        self.stats.requests[protocol.STATS] += 1
        fields = {"spec_hash": self._spec_hash, "stats": self.snapshot()}
        reply = Message(protocol.STATS, request.request_id, request.client_time_s, fields=fields)
        self._send(front, route, reply, received)

    def _error(self, front: zmq.Socket[Any], pending: Pending, code: str, message: str) -> None:
        self.stats.errors[code] += 1
        reply = protocol.make_error(code, message, pending.request_id, pending.client_time_s)
        self._send(front, pending.route, reply, pending.received_s)

    def _send(self, front: zmq.Socket[Any], route: list[bytes], reply: Message, received_s: float) -> None:
        timing = {"server_us": (time.monotonic() - received_s) * 1e6}
        message = Message(reply.type, reply.request_id, reply.client_time_s, fields={**reply.fields, "timing": timing})
        send_frames(front, [*route, *protocol.encode(message)])


def _drain(sock: zmq.Socket[Any], handle: Callable[[list[bytes]], None]) -> None:
    """Hand what ``sock`` holds to ``handle``, at most ``_BURST`` messages, so the other socket gets its turn."""
    for _ in range(_BURST):
        try:
            frames = recv_frames(sock, zmq.NOBLOCK)
        except zmq.Again:
            return
        handle(frames)
