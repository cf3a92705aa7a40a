"""How long a request waited before the server read it, from its sender's clock, robust to clock offset.

Requests queue in the server's socket when it is overloaded, and the server only sees them once it
reads them. Serving requests whose deadlines passed while they were queued wastes the capacity that
could still serve others on time: an overloaded server that keeps its queue would answer every robot
late. Each act request carries its client's wall-clock send time ``t``; ``read time - t`` is the
transit and queueing time plus the offset between the two clocks. The smallest value seen recently
from the same client stands for "offset + transit with no queue" (the base delay, as LEDBAT
estimates one-way delay), so the excess over it is the time spent queued. Any constant offset
between the clocks cancels out; a slow drift is followed because the base is the minimum over the
last one or two windows only; a jump of the clocks by more than :data:`MAX_QUEUE_S` resets the
base instead of making every request look late; and a client whose timestamps do not increase (one
that sends a constant, or no clock at all) is never thought queued, nor is a request whose timestamp
is not finite (it leaves the client's estimate as it was).

The state is soft: a restarted server, or a client it has not heard from in a while, starts with a
delay of zero, which is what a server without this estimate assumes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

WINDOW_S = 10.0
"""The base delay is the minimum over the current window and the one before it."""
MAX_QUEUE_S = 1.0
"""An apparent queueing delay larger than this is taken as a clock step: the base is reset."""
MAX_CLIENTS = 4096
"""Clients tracked at once; beyond it the table starts again (each client then starts at zero)."""


class QueueDelay:
    """Per-client estimate of the time a request spent queued before the server read it."""

    def __init__(self) -> None:
        # client -> [window start, current min, previous min, last sent_s]
        self._bases: dict[Hashable, list[float]] = {}

    def __len__(self) -> int:
        return len(self._bases)

    def observe(self, client: Hashable, sent_s: float, read_s: float) -> float:
        """Record a request sent at ``sent_s`` (client clock) and read at ``read_s`` (server clock).

        Both are wall-clock seconds. Returns the estimated queueing delay in seconds, >= 0.
        """
        if not math.isfinite(sent_s):  # not a clock reading (infinite, or NaN): nothing to estimate from
            return 0.0
        apparent = read_s - sent_s
        state = self._bases.get(client)
        if state is None or not sent_s > state[3]:  # new, or its timestamps are not a running clock
            if state is None and len(self._bases) >= MAX_CLIENTS:
                self._bases.clear()
            self._bases[client] = [read_s, apparent, apparent, sent_s]
            return 0.0
        state[3] = sent_s
        if read_s - state[0] >= WINDOW_S:  # roll the window: the old minimum is forgotten next time
            state[0], state[2], state[1] = read_s, state[1], apparent
        else:
            state[1] = min(state[1], apparent)
        base = min(state[1], state[2])
        delay = apparent - base
        if delay > MAX_QUEUE_S:  # one of the clocks stepped; start the estimate again
            state[0], state[1], state[2] = read_s, apparent, apparent
            return 0.0
        return delay
