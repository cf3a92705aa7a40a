"""How the policy server listens, batches and reports: its config, and the request size cap it derives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from agent_runtime import protocol
from agent_runtime.spec import PolicySpec


@dataclass(frozen=True)
class ServerConfig:
    """How the policy server listens, batches and reports."""

    endpoint: str = "tcp://127.0.0.1:5555"
    """ZeroMQ endpoint to bind. Loopback by default; tcp://0.0.0.0:5555 serves other hosts (use CURVE
    keys on a shared network); tcp://127.0.0.1:* picks a free port; ipc://PATH a unix socket."""
    max_batch: int = 32
    """Most act requests in one inference call."""
    max_wait_ms: float = 0.0
    """How long the first act request of a batch may wait for more. 0: batch only what has already
    arrived (requests that come in during an inference form the next batch)."""
    max_message_bytes: int | None = None
    """Largest request accepted, in bytes; also the per-frame cap on the socket. Default: one
    observation of the policy plus the largest header."""
    log_every_s: float = 10.0
    """Seconds between two statistics log lines; 0 turns them off."""
    curve_secret_key: Path | None = None
    """The server's CURVE secret key file (NAME.key_secret from `agent-runtime keys`): encrypts all
    traffic. Clients then need the server's public key file."""
    authorized_keys: Path | None = None
    """Directory of the public key files (*.key) of the robots allowed to connect; a client without one
    of these keys gets nothing. Needs --curve-secret-key. Without it, any client that knows the
    server's public key may connect (encrypted, not authenticated)."""

    def __post_init__(self) -> None:
        # The endpoint is checked where it is bound, so that a bad one is one error line at start-up.
        if self.max_batch < 1:
            raise ValueError(f"max_batch is {self.max_batch}; it must be at least 1")
        if not (0 <= self.max_wait_ms < 1000):
            raise ValueError(f"max_wait_ms is {self.max_wait_ms}; it must be in [0, 1000)")
        if self.max_message_bytes is not None and self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes is {self.max_message_bytes}; it must be at least 1024")
        if self.log_every_s < 0:
            raise ValueError(f"log_every_s is {self.log_every_s}; it must be >= 0")
        if self.authorized_keys is not None and self.curve_secret_key is None:
            raise ValueError("authorized_keys needs curve_secret_key: client authentication is part of CURVE")


def default_max_message_bytes(spec: PolicySpec) -> int:
    """One observation of ``spec`` plus the largest header: the size of the largest valid request."""
    observation = sum(math.prod(e.shape) * e.numpy_dtype.itemsize for e in spec.observations)
    return observation + protocol.MAX_HEADER_BYTES
