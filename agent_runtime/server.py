"""Running a policy server: in a background thread, or in the main thread until SIGINT or SIGTERM.

This is also the server's public face, so ``from agent_runtime.server import ...`` finds everything:
the server itself lives in :mod:`agent_runtime.policy_server`, its config in
:mod:`agent_runtime.server_config`. Imports go one way: this module, then the server, then its config.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from agent_runtime.interrupts import stop_signals
from agent_runtime.policy_server import SERVER_NAME, InferenceBackend, PolicyServer
from agent_runtime.server_config import ServerConfig, default_max_message_bytes

__all__ = [
    "SERVER_NAME",
    "InferenceBackend",
    "PolicyServer",
    "Servable",
    "ServerConfig",
    "default_max_message_bytes",
    "serve_in_thread",
    "serve_until_signalled",
]

log = logging.getLogger(__name__)


@contextmanager
def serve_in_thread(backend: InferenceBackend, config: ServerConfig, timeout_s: float = 10.0) -> Iterator[PolicyServer]:
    """Run a server in a background thread for the ``with`` block (tests, benchmarks, embedding).

    Yields the server once bound (``server.endpoint``); stops and joins it on exit.
    """
    server = PolicyServer(backend, config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            server.serve()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="policy-server", daemon=True)
    thread.start()
    try:
        try:
            server.wait_ready(timeout_s)
        except RuntimeError:
            thread.join(timeout_s)
            raise errors[0] if errors else RuntimeError("the policy server failed to start") from None
        yield server
    finally:
        server.stop()
        thread.join(timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"the policy server thread did not stop within {timeout_s} s")
    if errors:
        raise errors[0]


class Servable(Protocol):
    """A server that runs in :meth:`serve` until :meth:`stop` (a :class:`PolicyServer`, or a broker)."""

    def serve(self) -> None:
        """Serve until stopped (blocking)."""
        ...

    def stop(self) -> None:
        """Ask :meth:`serve` to return (thread- and signal-safe)."""
        ...


def serve_until_signalled(server: Servable) -> None:
    """Serve in this (main) thread until SIGINT or SIGTERM, then close cleanly."""

    def handle(signum: int, _frame: Any) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        server.stop()

    with stop_signals(handle):
        server.serve()
