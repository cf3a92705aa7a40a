"""The robot side of the wire: a DEALER client with bounded waits that never applies a stale action.

Every call takes an absolute deadline (``time.monotonic()`` seconds) and returns or raises by it: a
:class:`ClientError` says why no action came (no connection, no reply in time, an error reply). Each
request carries a fresh id; a reply with any other id (to a request that already timed out) is
dropped and counted, so a late action is never returned for a newer observation.

Recovery is ZeroMQ's reconnection plus one rule: every reply names the served spec by hash, and a
reply from a server whose spec is not the one checked at connect (a restart with another model) is
refused; the next request re-runs the hello check first. If that check finds the specs differ, act
raises :class:`~agent_runtime.spec.SpecMismatchError` at once for ``hello_retry_s`` before it asks
again, rather than sending a hello on every control tick.

Replies are untrusted too: anything wrong with one (including a value no check foresaw) is a
:class:`ClientError`, never another exception in the robot's control loop.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from agent_runtime import protocol
from agent_runtime.endpoints import EndpointError, check_endpoint, endpoint_error, wants_ipv6
from agent_runtime.frames import recv_frames, send_frames
from agent_runtime.protocol import Message, ProtocolError
from agent_runtime.spec import PolicySpec, SpecError, SpecMismatchError
from agent_runtime.stats import LogThrottle

log = logging.getLogger(__name__)


class ClientError(RuntimeError):
    """No action from the server for this request; the loop applies its fallback."""

    code = "client_error"


class ServerUnavailable(ClientError):
    """The request could not be sent before its deadline.

    Either there is no connection to the server, or the send queue is full because the server is not
    keeping up.
    """

    code = "unavailable"


class DeadlineExceeded(ClientError, TimeoutError):
    """No reply arrived before the deadline."""

    code = "timeout"


class ServerError(ClientError):
    """The server answered with an error reply (see ``agent_runtime.protocol.Code``)."""

    def __init__(
        self, code: str, message: str, fields: Mapping[str, Any] | None = None, request_id: int | None = None
    ) -> None:
        code, message = protocol.clip(code, 64), protocol.clip(message)  # a hostile server's text, bounded
        super().__init__(f"server error {code}: {message}")
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.request_id = request_id
        """The request this error answers."""


class SpecChanged(ClientError):
    """A reply came from a server whose spec differs from the one checked at connect; it was refused."""

    code = "spec_changed"


@dataclass(frozen=True)
class ClientConfig:
    """Where the policy server is and how to reach it."""

    endpoint: str = "tcp://127.0.0.1:5555"
    """The server's ZeroMQ endpoint."""
    connect_timeout_s: float = 5.0
    """How long connect() waits for the server's hello reply."""
    server_public_key: Path | None = None
    """The server's CURVE public key file (NAME.key): turns on encryption. Needs --curve-secret-key."""
    curve_secret_key: Path | None = None
    """This robot's CURVE secret key file (NAME.key_secret); its NAME.key must be in the server's
    authorized keys directory."""
    max_reply_bytes: int = 1 << 20
    """Largest reply accepted (also the socket's per-frame cap)."""
    hello_retry_s: float = 1.0
    """After the served spec was found not to match, act() refuses at once for this long before it
    checks again with another hello."""

    def __post_init__(self) -> None:
        if not self.connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s is {self.connect_timeout_s}; it must be positive")
        if (self.server_public_key is None) != (self.curve_secret_key is None):
            raise ValueError("CURVE needs both server_public_key and curve_secret_key, or neither")
        if self.max_reply_bytes < protocol.MAX_HEADER_BYTES:
            raise ValueError(f"max_reply_bytes must be at least {protocol.MAX_HEADER_BYTES}")
        if not self.hello_retry_s > 0:
            raise ValueError(f"hello_retry_s is {self.hello_retry_s}; it must be positive")


@dataclass
class ClientStats:
    """What the client saw: requests sent, replies taken, replies dropped and why, errors by code."""

    requests: int = 0
    replies: int = 0
    stale_replies: int = 0
    """Replies to earlier requests (that had already timed out), dropped."""
    malformed_replies: int = 0
    hellos: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class PolicyClient:
    """A connection to a policy server for one robot (one thread).

    Args:
        config: endpoint and keys.
        robot_spec: the robot's spec; the server's must be compatible with it.
        context: the ZeroMQ context; by default the process-wide one.
    """

    def __init__(self, config: ClientConfig, robot_spec: PolicySpec, context: zmq.Context[Any] | None = None) -> None:
        self.config = config
        self.robot_spec = robot_spec
        self.stats = ClientStats()
        self.server_spec: PolicySpec | None = None
        self._server_hash: str | None = None
        self._mismatch: SpecMismatchError | None = None
        self._mismatch_at_s = 0.0
        self._decode_failures = LogThrottle(10.0)
        self._action_dim = robot_spec.action.dim
        self._ids = itertools.count(1)
        self._sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        sock = self._sock
        sock.setsockopt(zmq.LINGER, 0)
        # Queue requests only on a live connection, so a send with the server gone fails at once
        # instead of queueing requests that would all be stale when it comes back.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.SNDHWM, 16)
        sock.setsockopt(zmq.MAXMSGSIZE, config.max_reply_bytes)
        # ZMTP heartbeats notice a server host that vanished without closing the connection.
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        if config.server_public_key is not None and config.curve_secret_key is not None:
            from agent_runtime.keys import load_keypair, load_public_key

            public, secret = load_keypair(config.curve_secret_key)
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.curve_serverkey = load_public_key(config.server_public_key)
        try:
            check_endpoint(config.endpoint)
            if wants_ipv6(config.endpoint):
                sock.setsockopt(zmq.IPV6, 1)
            sock.connect(config.endpoint)
        except (zmq.ZMQError, EndpointError) as exc:
            sock.close(linger=0)
            raise (
                exc if isinstance(exc, EndpointError) else endpoint_error(config.endpoint, exc, binding=False)
            ) from None
        self._pollers: dict[int, zmq.Poller] = {e: zmq.Poller() for e in (zmq.POLLIN, zmq.POLLOUT)}  # reused: cheaper
        for event, poller in self._pollers.items():
            poller.register(sock, event)

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket at once (pending messages are dropped)."""
        self._sock.close(linger=0)

    def connect(self, deadline: float | None = None) -> PolicySpec:
        """Exchange specs with the server and check them (hello).

        Args:
            deadline: absolute ``time.monotonic()`` deadline; default ``config.connect_timeout_s`` from now.

        Returns:
            The server's policy spec.

        Raises:
            SpecMismatchError: the specs differ; the message names every differing field.
            ClientError: no hello reply by the deadline, or an error reply.
        """
        if deadline is None:
            deadline = time.monotonic() + self.config.connect_timeout_s
        self.stats.hellos += 1
        try:
            reply = self._request(protocol.HELLO, {}, {"spec": self.robot_spec.to_json()}, deadline)
        except ServerError as exc:
            differences = exc.fields.get("differences")
            if exc.code == protocol.Code.SPEC_MISMATCH and isinstance(differences, list):
                context = f"{self.config.endpoint}: the robot's spec does not match the served policy's"
                named = [protocol.clip(protocol.as_text(d), 256) for d in differences[:32]]
                raise SpecMismatchError(named, context=context) from None
            raise
        text = reply.fields.get("spec")
        if not isinstance(text, str):
            raise ClientError(f"{self.config.endpoint}: the hello reply carries no spec")
        try:
            spec = PolicySpec.from_json(text)
        except SpecError:
            raise
        except Exception as exc:  # from_json raises only SpecError by design; a bug must not reach the loop
            self.stats.malformed_replies += 1
            raise self._count(ClientError(f"the hello reply's spec cannot be read ({type(exc).__name__})")) from None
        spec.check_compatible(self.robot_spec, ours="policy", theirs="robot")
        self._mismatch = None
        self.server_spec = spec
        served_hash = reply.fields.get("spec_hash")
        self._server_hash = served_hash if isinstance(served_hash, str) else spec.interface_hash()
        return spec

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> np.ndarray:
        """The policy's action for one observation, or an exception by ``deadline``.

        Args:
            observation: entry name to array, one sample (no batch axis), exactly as the robot's spec says.
            deadline: absolute ``time.monotonic()`` time by which to return.

        Returns:
            float32 (A,) action, as the server sent it (the loop clips it to the bounds).

        Raises:
            ObservationError: the observation does not match the robot's spec (nothing was sent).
            SpecMismatchError: after a server restart, the new server's spec does not match.
            ClientError: no action by the deadline (see the subclasses).
        """
        answer = self.receive_act(self.request_act(observation, deadline), deadline)
        return answer if answer.ndim == 1 else answer[0]  # a chunked policy's action for this step

    def request_act(self, observation: Mapping[str, np.ndarray], deadline: float) -> int:
        """Send an act request (first half of :meth:`act`); returns its id for :meth:`receive_act`.

        The request carries ``deadline`` (as ``deadline_ms`` from now): the server refuses it once that
        has passed. Raises as :meth:`act` does when it cannot be sent by then.
        """
        self.robot_spec.check_observation(observation)
        if self._server_hash is None:
            self._hello_again(deadline)
        remaining_ms = (deadline - time.monotonic()) * 1e3
        if remaining_ms <= 0:
            raise self._count(DeadlineExceeded("the deadline passed before the request was sent"))
        return self._send_request(protocol.ACT, observation, {"deadline_ms": remaining_ms}, deadline)

    def receive_act(self, request_id: int, deadline: float | None) -> np.ndarray:
        """The answer to act request ``request_id`` (second half of :meth:`act`).

        Args:
            request_id: from :meth:`request_act`. Replies to other requests are dropped as stale.
            deadline: wait for it until then; ``None``: take it only if it has already arrived.

        Returns:
            float32 (A,), or (H, A) when the served policy answers with an action chunk of H.

        Raises:
            DeadlineExceeded: no reply yet (``deadline`` None) or by the deadline.
            ClientError: an error reply, or a reply that is not a finite action of the served shape.
        """
        return self.receive_any_act((request_id,), deadline)[1]

    def receive_any_act(self, request_ids: Collection[int], deadline: float | None) -> tuple[int, np.ndarray]:
        """The answer to whichever of several act requests in flight is answered first: (its id, answer).

        As :meth:`receive_act`, for a source that keeps more than one request in flight (a chunked
        policy's queue). Replies to requests not in ``request_ids`` are dropped as stale; a
        :class:`ServerError` names the request it answers in ``request_id``.
        """
        reply = self._await(request_ids, protocol.ACT, deadline)
        assert reply.request_id is not None  # _await returns only replies to the ids asked for
        shape = (self._action_dim,) if self.server_spec is None else self.server_spec.action_shape
        action = reply.arrays.get("action")
        if action is None or action.shape != shape or action.dtype != np.float32:
            self.stats.malformed_replies += 1
            raise self._count(ClientError(f"the act reply has no float32 {shape} 'action'"))
        if not np.isfinite(action).all():
            self.stats.malformed_replies += 1
            raise self._count(ClientError("the act reply's action contains NaN or Inf"))
        return reply.request_id, action.copy()

    def _hello_again(self, deadline: float) -> None:
        """Connect before an act, but after a spec mismatch at most once per ``hello_retry_s``."""
        if self._mismatch is not None:
            age_s = time.monotonic() - self._mismatch_at_s
            if age_s < self.config.hello_retry_s:
                context = (
                    f"{self.config.endpoint}: the robot's spec does not match the served policy's (found "
                    f"{age_s:.2f} s ago; the next hello is in {self.config.hello_retry_s - age_s:.2f} s)"
                )
                raise SpecMismatchError(self._mismatch.differences, context=context)
        try:
            self.connect(deadline)
        except SpecMismatchError as exc:
            self._mismatch, self._mismatch_at_s = exc, time.monotonic()
            raise

    def ping(self, deadline: float) -> Message:
        """A round trip with no payload; the reply carries the server's timing."""
        return self._request(protocol.PING, {}, {}, deadline)

    def server_stats(self, deadline: float) -> dict[str, Any]:
        """The server's statistics (requests, errors by code, latency, batch sizes)."""
        stats = self._request(protocol.STATS, {}, {}, deadline).fields.get("stats")
        if not isinstance(stats, dict):
            raise ClientError("the stats reply carries no statistics")
        return stats

    # -- one request ------------------------------------------------------------------------------

    def _request(self, kind: str, arrays: Mapping[str, np.ndarray], fields: dict[str, Any], deadline: float) -> Message:
        return self._await((self._send_request(kind, arrays, fields, deadline),), kind, deadline)

    def _send_request(
        self, kind: str, arrays: Mapping[str, np.ndarray], fields: dict[str, Any], deadline: float
    ) -> int:
        request_id = next(self._ids)
        frames = protocol.encode(Message(kind, request_id, time.time(), arrays, fields))
        self._send(frames, deadline)
        self.stats.requests += 1
        return request_id

    def _send(self, frames: list[Any], deadline: float) -> None:
        while True:
            try:
                send_frames(self._sock, frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                if not self._wait(zmq.POLLOUT, deadline):
                    raise self._count(
                        ServerUnavailable(
                            f"could not send to {self.config.endpoint} before the deadline (no connection, or the "
                            "server is not keeping up)"
                        )
                    ) from None

    def _await(self, request_ids: Collection[int], kind: str, deadline: float | None) -> Message:
        """The next reply to one of ``request_ids``; ``deadline`` None: only from what has already arrived."""
        while True:
            if deadline is None:
                if not self._pollers[zmq.POLLIN].poll(0):
                    raise DeadlineExceeded(f"no {kind} reply from {self.config.endpoint} yet")
            elif not self._wait(zmq.POLLIN, deadline):
                raise self._count(DeadlineExceeded(f"no {kind} reply from {self.config.endpoint} by the deadline"))
            frames = recv_frames(self._sock, zmq.NOBLOCK)
            try:
                reply = protocol.decode(frames, self.config.max_reply_bytes)
            except ProtocolError:
                self.stats.malformed_replies += 1
                continue
            except Exception:  # decode raises only ProtocolError by design; a bug must not reach the loop
                if (left_out := self._decode_failures()) is not None:
                    log.exception("could not decode a reply, dropped it (%d such failures not logged)", left_out)
                self.stats.malformed_replies += 1
                continue
            if reply.request_id not in request_ids:
                self.stats.stale_replies += 1
                continue
            self.stats.replies += 1
            error = reply.error
            if error is not None:
                raise self._count(ServerError(*error, fields=reply.fields, request_id=reply.request_id))
            if reply.type != kind:
                self.stats.malformed_replies += 1
                raise self._count(ClientError(f"a {kind} request got a {reply.type} reply"))
            if kind == protocol.ACT and reply.fields.get("spec_hash") != self._server_hash:
                self._server_hash = None  # hello again before the next request
                raise self._count(SpecChanged("the server now serves another policy spec; reconnecting"))
            return reply

    def _wait(self, event: int, deadline: float) -> bool:
        """Poll for ``event`` until ``deadline``, to sub-millisecond precision (zmq polls in whole ms).

        False once the deadline has passed, even if the event is ready: what is ready then is too late.
        """
        poller = self._pollers[event]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if remaining >= 1e-3:
                if poller.poll(math.floor(remaining * 1e3)):
                    return True
            elif poller.poll(0):
                return True
            else:
                time.sleep(min(remaining, 1e-4))

    def _count(self, exc: ClientError) -> ClientError:
        self.stats.errors[exc.code] += 1
        return exc
