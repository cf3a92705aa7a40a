"""ZeroMQ endpoints: what a usable one looks like, and one-line errors when binding or connecting fails."""

from __future__ import annotations

import errno

import zmq

FORMS = "tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555, tcp://0.0.0.0:5555, or tcp://127.0.0.1:* for any free port) or ipc:///PATH"
"""The endpoint forms this project documents."""


class EndpointError(RuntimeError):
    """An endpoint could not be used; the message names it and says what to do instead."""


def check_endpoint(endpoint: str) -> None:
    """Raise :class:`EndpointError` when ``endpoint`` is not ``transport://address`` at all."""
    transport, sep, address = endpoint.partition("://")
    if not sep or not transport or not address:
        raise EndpointError(f"endpoint {endpoint!r} does not parse; use {FORMS}")
    if transport == "tcp":
        host, colon, port = address.rpartition(":")
        if not colon or not host:
            raise EndpointError(f"endpoint {endpoint!r} has no port; use {FORMS}")
        # libzmq takes any number here and wraps it; a port is 0 to 65535 (0 or * binds any free one).
        if port != "*" and not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) < 65536):
            raise EndpointError(f"endpoint {endpoint!r}: the port must be 0 to 65535, or * for any free one")


def wants_ipv6(endpoint: str) -> bool:
    """Whether ``endpoint`` names an IPv6 address (``tcp://[::1]:5555``): its socket needs ``zmq.IPV6``."""
    return endpoint.startswith("tcp://") and "[" in endpoint


def endpoint_error(endpoint: str, exc: zmq.ZMQError, binding: bool) -> EndpointError:
    """The one-line error for a failed ``bind`` (``binding``) or ``connect`` of ``endpoint``."""
    verb = "serve on" if binding else "connect to"
    if exc.errno == errno.EADDRINUSE:
        return EndpointError(
            f"cannot {verb} {endpoint}: the address is in use (another server?); stop it or choose another endpoint"
        )
    if exc.errno == errno.EACCES:
        return EndpointError(
            f"cannot {verb} {endpoint}: no permission (TCP ports below 1024 need privileges; an ipc:// path needs a "
            "directory you can write)"
        )
    if exc.errno == zmq.EPROTONOSUPPORT:
        return EndpointError(f"cannot {verb} {endpoint}: ZeroMQ has no such transport; use {FORMS}")
    if exc.errno in (errno.EINVAL, errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT):
        if endpoint.startswith("ipc://"):
            return EndpointError(f"cannot {verb} {endpoint}: the path's directory must exist and be writable")
        where = " (a host name must be an address of this machine)" if binding else ""
        return EndpointError(f"cannot {verb} {endpoint}: not a usable address{where}; use {FORMS}")
    return EndpointError(f"cannot {verb} {endpoint}: {exc.strerror}")
