"""Moving protocol frames over ZeroMQ sockets at the lowest cost (one place for client, server and benches).

pyzmq's zero-copy path (``copy=False``) builds a ``zmq.Frame`` per part and tracks its buffer, which
costs far more than copying a small frame: on CPU-2 a small act request and its reply take about
16 us to send and receive with copies and about 100 us without. So frames are copied unless they are
at least :data:`ZERO_COPY_MIN_BYTES`, and received frames are always copied into ``bytes`` (one
``memcpy`` even for a 64 KB camera observation, cheaper than the bookkeeping it saves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

ZERO_COPY_MIN_BYTES = 1 << 16
"""Frames at least this large are sent without a copy (pyzmq's own copy threshold)."""


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Any], flags: int = 0) -> None:
    """Send ``frames`` (bytes or buffers) as one multipart message.

    Raises:
        zmq.Again: with ``zmq.NOBLOCK`` in ``flags``, when the message cannot be queued now (nothing
            was sent: ZeroMQ accepts the rest of a message once its first part is queued).
    """
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        sock.send(frame, flags | zmq.SNDMORE if i < last else flags, copy=size < ZERO_COPY_MIN_BYTES)


def recv_frames(sock: zmq.Socket[Any], flags: int = 0) -> list[bytes]:
    """Receive one multipart message as ``bytes`` frames.

    Raises:
        zmq.Again: with ``zmq.NOBLOCK`` in ``flags``, when no message is waiting.
    """
    return sock.recv_multipart(flags, copy=True)


def split_route(frames: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """A message read from a ROUTER as (routing frames, body).

    The ROUTER prefixes the sender's identity. A DEALER then sends [header, arrays...]; a REQ socket
    puts an empty delimiter first, which stays in the route so that the reply carries it back.
    """
    split = 2 if len(frames) > 2 and len(frames[1]) == 0 else 1
    return list(frames[:split]), list(frames[split:])
