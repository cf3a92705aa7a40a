"""The policy server: answers many robot hosts over a ZeroMQ ROUTER socket, batching their act requests.

One thread owns the socket and runs a simple cycle: read what has arrived (answering hello, ping,
stats and malformed messages at once), then run one inference call on all act requests read in this
cycle and reply to each. Requests that arrive while a batch is being inferred are batched together in
the next cycle, so under load batches grow by themselves without adding latency at low load;
``max_wait_ms`` can trade a little latency for larger batches. The server keeps no per-robot state:
a restarted server serves every robot as before.

The policy is an injectable :class:`InferenceBackend` (``agent_runtime.onnx_policy.OnnxPolicy`` in
production, a fake in tests).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import msgpack
import numpy as np
import zmq

from agent_runtime import protocol
from agent_runtime.endpoints import check_endpoint, endpoint_error, wants_ipv6
from agent_runtime.frames import recv_frames, send_frames, split_route
from agent_runtime.protocol import Code, Message, ProtocolError
from agent_runtime.queue_delay import QueueDelay
from agent_runtime.server_config import ServerConfig, default_max_message_bytes
from agent_runtime.spec import PolicySpec, SpecError
from agent_runtime.stats import LogThrottle, ServerStats

log = logging.getLogger(__name__)

SERVER_NAME = "agent-runtime"
_POLL_MS = 50  # how soon a stop request or a pending log line is noticed when idle
_MAX_DIFFERENCES, _MAX_DIFFERENCE_CHARS = 32, 256  # a spec_mismatch reply quotes the robot's spec: bound it


class InferenceBackend(Protocol):
    """A policy the server can run: its spec, and batched observations to actions."""

    @property
    def spec(self) -> PolicySpec:
        """The policy's spec."""
        ...

    def infer(self, observations: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions for a batch: entry name to array (B, *entry shape) in, float32 (B, A) out.

        A policy whose spec declares an action chunk of H returns (B, H, A).
        """
        ...


WORKER_REPORT_S = 0.5
"""How often a worker behind a broker reports its counts, when they changed (``serve --workers``)."""


@dataclass(frozen=True)
class WorkerLink:
    """Where a server working behind a broker (``serve --workers``) connects instead of binding."""

    endpoint: str
    """The broker's backend endpoint (ipc:// or tcp:// on this host)."""
    identity: bytes
    """This worker's routing identity at the broker; a restarted worker gets a new one."""


def worker_report(kind: str, **fields: Any) -> bytes:
    """A worker's control frame to its broker: a one-frame message (a reply has at least two)."""
    return msgpack.packb({"worker": kind, **fields})


class _Act(NamedTuple):
    route: list[bytes]
    request: Message
    received_s: float
    expires_s: float


class PolicyServer:
    """Serves one policy on one socket until :meth:`stop` (``agent_runtime.server`` runs one in a thread).

    Args:
        backend: the policy.
        config: socket, batching and reporting settings.
        context: a ZeroMQ context to use; by default the server makes and terminates its own.
        worker_of: serve as one worker behind a broker (:mod:`agent_runtime.broker`): connect a DEALER
            socket to the broker instead of binding ``config.endpoint``. Requests arrive with their
            client's routing frame as from a ROUTER, so everything else works as when bound; the
            broker does the CURVE side, so the worker ignores the key settings.
    """

    def __init__(
        self,
        backend: InferenceBackend,
        config: ServerConfig,
        context: zmq.Context[Any] | None = None,
        worker_of: WorkerLink | None = None,
    ) -> None:
        self.config = config
        self._link = worker_of
        self.stats = ServerStats()
        self._backend = backend
        self._spec = backend.spec
        self._spec_json = self._spec.to_json()
        self._spec_hash = self._spec.interface_hash()
        self._cap = config.max_message_bytes or default_max_message_bytes(self._spec)
        self._context = context
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._next_backend: InferenceBackend | None = None
        self._logged_backend_error = False
        self._handler_failures = LogThrottle(10.0)
        self._last_infer_s = 0.0
        self._queue_delay = QueueDelay()
        self._endpoint: str | None = None

    @property
    def spec(self) -> PolicySpec:
        """The served policy's spec."""
        return self._spec

    @property
    def endpoint(self) -> str:
        """The bound endpoint (with the port chosen, for ``tcp://HOST:*``)."""
        if self._endpoint is None:
            raise RuntimeError("the policy server is not bound yet; wait_ready() first")
        return self._endpoint

    def stop(self) -> None:
        """Ask the serving thread to finish its current cycle and close (thread- and signal-safe)."""
        self._stop.set()

    def wait_ready(self, timeout_s: float) -> str:
        """Block until the socket is bound (at most ``timeout_s``); returns the bound endpoint."""
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the policy server did not bind {self.config.endpoint} within {timeout_s} s")
        if self._endpoint is None:
            raise RuntimeError(f"the policy server failed before binding {self.config.endpoint}")
        return self._endpoint

    def swap(self, backend: InferenceBackend) -> None:
        """Serve ``backend`` from the next batch on, keeping every connection (thread-safe).

        Raises:
            SpecMismatchError: the new policy's spec is not compatible with the served one; nothing changes.
        """
        self._spec.check_compatible(backend.spec, ours="served policy", theirs="new policy")
        with self._lock:
            self._next_backend = backend

    def serve(self) -> None:
        """Bind, then serve until :meth:`stop`; closes the socket (and its own context) on the way out."""
        context = self._context or zmq.Context()
        authenticator = None
        sock = None
        try:
            if self._link is not None:
                sock = self._connect(context, self._link)
            else:
                if self.config.curve_secret_key is not None:
                    from agent_runtime.keys import start_authenticator

                    authenticator = start_authenticator(context, self.config.authorized_keys)
                sock = bind_router(context, self.config, self._cap)
            self._endpoint = self._link.endpoint if self._link else sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._ready.set()
            log.info("serving %s on %s (max batch %d)", self._describe(), self._endpoint, self.config.max_batch)
            self._loop(sock)
        finally:
            if sock is not None:
                sock.close(linger=0)
            if authenticator is not None:
                authenticator.stop()
            if self._context is None:
                context.term()
            self._ready.set()  # wakes wait_ready() if start-up failed
            if self._endpoint is not None:
                log.info("stopped; %s", self.stats.line())

    def _connect(self, context: zmq.Context[Any], link: WorkerLink) -> zmq.Socket[Any]:
        sock = context.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IDENTITY, link.identity)
            # The broker bounds what it forwards; on this host-local link a full queue would only
            # block the worker, so neither direction has a high-water mark.
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.connect(link.endpoint)
            send_frames(sock, [worker_report("ready", pid=os.getpid())])
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _report(self, sock: zmq.Socket[Any]) -> None:
        """Tell the broker this worker's counts (the broker answers ``stats`` for all its workers)."""
        counts = {
            "requests": dict(self.stats.requests),
            "errors": dict(self.stats.errors),
            "batches": {str(k): v for k, v in self.stats.batches.items()},
        }
        send_frames(sock, [worker_report("stats", **counts)])

    # -- the serving cycle ------------------------------------------------------------------------

    def _loop(self, sock: zmq.Socket[Any]) -> None:
        next_log = time.monotonic() + self.config.log_every_s
        next_report, reported = time.monotonic(), -1
        while not self._stop.is_set():
            self._take_new_backend()
            if self._link is not None and time.monotonic() >= next_report:
                count = sum(self.stats.requests.values()) + sum(self.stats.errors.values())
                if count != reported:
                    self._report(sock)
                    reported = count
                next_report = time.monotonic() + WORKER_REPORT_S
            if self.config.log_every_s and time.monotonic() >= next_log:
                log.info("%s", self.stats.line())
                next_log = time.monotonic() + self.config.log_every_s
            if not sock.poll(_POLL_MS, zmq.POLLIN):
                continue
            batch = self._collect(sock)
            if batch:
                self._run_batch(sock, batch)

    def _collect(self, sock: zmq.Socket[Any]) -> list[_Act]:
        """Read what has arrived, answering everything but valid act requests, which are returned."""
        acts: list[_Act] = []
        wait_until: float | None = None
        # Bounded so that a flood of other messages cannot hold back acts already read.
        for _ in range(4 * self.config.max_batch + 16):
            try:
                frames = recv_frames(sock, zmq.NOBLOCK)
            except zmq.Again:
                if wait_until is None or not self.config.max_wait_ms:
                    break
                remaining_ms = (wait_until - time.monotonic()) * 1e3
                if remaining_ms <= 0 or not sock.poll(math.ceil(remaining_ms), zmq.POLLIN):
                    break
                continue
            act = self._handle(sock, frames)
            if act is not None:
                acts.append(act)
                if wait_until is None:
                    wait_until = act.received_s + self.config.max_wait_ms / 1e3
                # Spend at most half of a request's remaining budget (after the last inference's
                # duration) waiting for company, so the wait itself never makes it miss its deadline.
                budget_s = act.expires_s - act.received_s - self._last_infer_s
                wait_until = min(wait_until, act.received_s + 0.5 * budget_s)
                if len(acts) >= self.config.max_batch:
                    break
        return acts

    def _handle(self, sock: zmq.Socket[Any], frames: list[Any]) -> _Act | None:
        received = time.monotonic()
        route, body = split_route(frames)  # the reply goes back with the same route
        request: Message | None = None
        try:
            request = protocol.decode(body, self._cap, protocol.REQUEST_TYPES)
            self.stats.requests[request.type] += 1
            if request.type == protocol.ACT:
                deadline_s = protocol.act_deadline_s(request)  # a header field: checked before the arrays
                protocol.check_observation(self._spec, request.arrays, request)
                # The deadline counts from the request's send, less the estimated queueing delay (read
                # in wall-clock time, the client's clock): under overload, requests that waited out
                # their budget in the socket are refused without inference instead of answered late.
                queued_s = self._queue_delay.observe(route[0], request.client_time_s, time.time())
                expires = received - queued_s + deadline_s
                return _Act(route, request, received, expires)
            self._reply(sock, route, self._answer(request), received)
        except ProtocolError as exc:
            self.stats.errors[exc.code] += 1
            self._reply(sock, route, protocol.error_reply(exc), received)
        except Exception as exc:  # a bug, or an input no check foresaw, must not end the serving thread
            if (left_out := self._handler_failures()) is not None:
                log.exception("could not handle a message, replied malformed (%d such failures not logged)", left_out)
            self.stats.errors[Code.MALFORMED] += 1
            message = f"the server could not handle this message ({type(exc).__name__}); see docs/protocol.md"
            echo = (request.request_id, request.client_time_s) if request is not None else (None, 0.0)
            self._reply(sock, route, protocol.make_error(Code.MALFORMED, message, *echo), received)
        return None

    def _answer(self, request: Message) -> Message:
        """The reply to a hello, ping or stats request."""
        fields: dict[str, Any] = {"spec_hash": self._spec_hash}
        if request.type == protocol.HELLO:
            theirs = request.fields.get("spec")
            diffs = [] if theirs is None else _spec_differences(self._spec, theirs, request)
            if diffs:
                self.stats.errors[Code.SPEC_MISMATCH] += 1
                message = "the robot's spec does not match the served policy's:\n  " + "\n  ".join(diffs)
                diffs = [protocol.clip(d, _MAX_DIFFERENCE_CHARS) for d in diffs[:_MAX_DIFFERENCES]]
                return protocol.make_error(
                    Code.SPEC_MISMATCH, message, request.request_id, request.client_time_s, differences=diffs
                )
            fields.update(
                spec=self._spec_json,
                server=SERVER_NAME,
                limits={"max_message_bytes": self._cap, "max_batch": self.config.max_batch},
            )
        elif request.type == protocol.STATS:
            fields["stats"] = self.stats.snapshot()
        return Message(request.type, request.request_id, request.client_time_s, fields=fields)

    def _run_batch(self, sock: zmq.Socket[Any], acts: list[_Act]) -> None:
        """Answer every act read in this cycle exactly once: an action, or an error saying why not."""
        answered: set[int] = set()  # ids of the acts replied to
        try:
            self._infer_and_reply(sock, acts, answered)
        except Exception as exc:  # a bug must neither end the serving thread nor leave a request unanswered
            if (left_out := self._handler_failures()) is not None:
                log.exception("could not serve a batch; replied policy_error (%d such failures not logged)", left_out)
            message = f"the server could not serve this request ({type(exc).__name__}); see docs/protocol.md"
            for act in acts:
                if id(act) not in answered:
                    try:
                        self._fail(sock, act, Code.POLICY_ERROR, message)
                    except Exception:  # sending itself fails: nothing more can reach this client now
                        log.exception("could not send an error reply")

    def _infer_and_reply(self, sock: zmq.Socket[Any], acts: list[_Act], answered: set[int]) -> None:
        self._take_new_backend()
        start = time.monotonic()
        # A request whose budget would end before an inference as long as the last one finished is
        # not run: its reply would come late, and the time is better spent on the others. That is a
        # prediction, so it never refuses a whole batch: otherwise one slow call could make the
        # server refuse everything from then on, never measuring a faster call again.
        cutoff = start + self._last_infer_s
        if not any(a.expires_s >= cutoff for a in acts):
            cutoff = start
        live = [a for a in acts if a.expires_s >= cutoff]
        for act in acts:
            if not act.expires_s >= cutoff:  # the complement of ``live``, whatever the number
                self._fail(
                    sock, act, Code.DEADLINE_EXPIRED, "the request's deadline would pass before its inference finished"
                )
                answered.add(id(act))
        if not live:
            return
        names = self._spec.observation_names
        if len(live) == 1:
            observations = {n: live[0].request.arrays[n][None] for n in names}  # a view: no copy
        else:
            observations = {n: np.stack([a.request.arrays[n] for a in live]) for n in names}
        try:
            actions = self._checked_actions(self._backend.infer(observations), len(live))
        except Exception as exc:  # a failing policy must not take the server down for everyone
            if not self._logged_backend_error:
                log.exception("the inference backend failed (further failures are only counted)")
                self._logged_backend_error = True
            for act in live:
                self._fail(sock, act, Code.POLICY_ERROR, f"inference failed: {type(exc).__name__}: {exc}")
                answered.add(id(act))
            return
        done = time.monotonic()
        self._last_infer_s = done - start
        self.stats.batches[len(live)] += 1
        infer_us, size = (done - start) * 1e6, len(live)
        for act, action in zip(live, actions, strict=True):
            request = act.request
            timing = {"queue_us": (start - act.received_s) * 1e6, "infer_us": infer_us, "batch": size}
            self._send(
                sock, act.route, protocol.ACT, request.request_id, request.client_time_s,
                {"spec_hash": self._spec_hash}, act.received_s, {"action": action}, timing,
            )  # fmt: skip
            answered.add(id(act))
            self.stats.latency.add(time.monotonic() - act.received_s)

    def _checked_actions(self, actions: Any, batch: int) -> np.ndarray:
        out = np.asarray(actions, dtype=np.float32)
        expected = (batch, *self._spec.action_shape)
        if out.shape != expected:
            raise ValueError(f"the policy returned actions of shape {out.shape}; expected {expected}")
        if not np.isfinite(out).all():
            raise ValueError("the policy returned NaN or Inf actions")
        return np.ascontiguousarray(self._spec.action.clip(out), dtype=np.float32)

    def _fail(self, sock: zmq.Socket[Any], act: _Act, code: str, message: str) -> None:
        self.stats.errors[code] += 1
        reply = protocol.make_error(code, message, act.request.request_id, act.request.client_time_s)
        self._reply(sock, act.route, reply, act.received_s)

    def _send(
        self,
        sock: zmq.Socket[Any],
        route: list[bytes],
        kind: str,
        request_id: int | None,
        client_time_s: float,
        fields: Mapping[str, Any],
        received_s: float,
        arrays: Mapping[str, np.ndarray] | None = None,
        timing: dict[str, Any] | None = None,
    ) -> None:
        """Send one reply; its ``timing`` gains ``server_us``, the time since the request was received."""
        timing = {**(timing or {}), "server_us": (time.monotonic() - received_s) * 1e6}
        frames = protocol.encode(Message(kind, request_id, client_time_s, arrays or {}, {**fields, "timing": timing}))
        if len(frames[0]) > protocol.MAX_HEADER_BYTES:  # no client could read it; only echoed text can do this
            log.error("a %s reply's header came to %d bytes; sent an error instead", kind, len(frames[0]))
            message = f"the reply's header would be over {protocol.MAX_HEADER_BYTES} bytes"
            substitute = protocol.make_error(
                Code.TOO_LARGE, message, request_id, client_time_s, timing={"server_us": timing["server_us"]}
            )
            frames = protocol.encode(substitute)
        # A ROUTER never blocks on send: a reply to a robot that has gone, or whose queue is full, is dropped.
        send_frames(sock, [*route, *frames])

    def _reply(self, sock: zmq.Socket[Any], route: list[bytes], reply: Message, received_s: float) -> None:
        """Send a reply built as a :class:`Message` (hello, ping, stats and errors)."""
        self._send(sock, route, reply.type, reply.request_id, reply.client_time_s, reply.fields, received_s)

    def _take_new_backend(self) -> None:
        with self._lock:
            backend, self._next_backend = self._next_backend, None
        if backend is not None:
            self._backend = backend
            self._spec = backend.spec
            self._spec_json = self._spec.to_json()
            self._spec_hash = self._spec.interface_hash()
            self._logged_backend_error = False
            log.info("now serving %s", self._describe())

    def _describe(self) -> str:
        p = self._spec.provenance
        what = ", ".join(x for x in (p.policy, p.task_preset, p.encoder) if x)
        return f"policy ({what})" if what else "policy"


def bind_router(context: zmq.Context[Any], config: ServerConfig, cap: int) -> zmq.Socket[Any]:
    """The public ROUTER socket a server (or its broker) answers robots on: bound, capped, CURVE if set.

    Raises:
        EndpointError: the endpoint does not parse or cannot be bound (one line naming it and the fix).
    """
    sock = context.socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, cap)
        if config.curve_secret_key is not None:
            from agent_runtime.keys import load_keypair

            public, secret = load_keypair(config.curve_secret_key)
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        check_endpoint(config.endpoint)
        if wants_ipv6(config.endpoint):
            sock.setsockopt(zmq.IPV6, 1)
        try:
            sock.bind(config.endpoint)
        except zmq.ZMQError as exc:
            raise endpoint_error(config.endpoint, exc, binding=True) from None
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def _spec_differences(ours: PolicySpec, theirs: Any, request: Message) -> list[str]:
    if not isinstance(theirs, str):
        raise ProtocolError(
            Code.MALFORMED, "hello 'spec' must be the spec's JSON text", request.request_id, request.client_time_s
        )
    try:
        robot = PolicySpec.from_json(theirs)
    except SpecError as exc:
        raise ProtocolError(
            Code.MALFORMED, f"hello 'spec' is not a valid policy spec: {exc}", request.request_id, request.client_time_s
        ) from None
    return ours.differences(robot, ours="policy", theirs="robot")
