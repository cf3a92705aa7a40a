"""Bounded-memory statistics shared by the server, the control loop and the benchmarks."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np


class LatencyWindow:
    """The most recent ``capacity`` durations, in seconds, with their percentiles.

    A ring buffer: a server that runs for days keeps constant memory, and its percentiles describe
    recent traffic rather than the whole uptime. ``count`` and ``max_s`` cover every sample ever added.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity is {capacity}; it must be at least 1")
        self._samples = np.zeros(capacity, dtype=np.float64)
        self._next = 0
        self.count = 0
        self.max_s = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration."""
        self._samples[self._next] = seconds
        self._next = (self._next + 1) % len(self._samples)
        self.count += 1
        self.max_s = max(self.max_s, seconds)

    def values(self) -> np.ndarray:
        """The samples held now, float64 (n,), oldest first."""
        if self.count < len(self._samples):
            return self._samples[: self.count].copy()
        return np.roll(self._samples, -self._next)

    def percentile_s(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the held samples; NaN when there are none."""
        if self.count == 0:
            return float("nan")
        return float(np.percentile(self.values(), q))

    def summary_ms(self) -> dict[str, float]:
        """``{"p50_ms", "p99_ms", "max_ms", "count"}``; percentiles over the window, max over all time.

        ``count`` (all time) is an int; the others are floats, NaN before the first value.
        """
        return {
            "p50_ms": self.percentile_s(50) * 1e3,
            "p99_ms": self.percentile_s(99) * 1e3,
            "max_ms": self.max_s * 1e3 if self.count else float("nan"),
            "count": self.count,
        }


class LogThrottle:
    """Rate limit for a log line that could repeat on every message or tick: one per ``interval_s``.

    Call it where the line would be logged: it returns ``None`` when the line should be left out,
    otherwise how many were left out since the last one that was logged (to say so in the line).

    Args:
        interval_s: least time between two logged lines.
        clock: seconds, monotonic (injectable, e.g. the control loop's clock).
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next_s = -math.inf
        self._left_out = 0

    def __call__(self) -> int | None:
        """``None``: skip this line; else log it, mentioning the returned count of lines skipped before it."""
        now = self._clock()
        if now < self._next_s:
            self._left_out += 1
            return None
        self._next_s = now + self.interval_s
        left_out, self._left_out = self._left_out, 0
        return left_out


def format_counts(counts: Counter[str] | dict[str, int]) -> str:
    """``"a=3, b=1"``, largest first; ``"none"`` when empty."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k}={v}" for k, v in items) if items else "none"


class ServerStats:
    """What a policy server has done since it started: requests, errors, latency, batch sizes.

    Latency is an act request's time in the server, from its receipt to its reply being queued.
    """

    def __init__(self) -> None:
        self.started_s = time.monotonic()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.batches: Counter[int] = Counter()
        self.latency = LatencyWindow()

    def snapshot(self) -> dict[str, Any]:
        """Plain ints, floats and strings (msgpack- and JSON-ready), as a ``stats`` reply carries them."""
        batches = sum(self.batches.values())
        acts = sum(size * n for size, n in self.batches.items())
        return {
            "uptime_s": time.monotonic() - self.started_s,
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "latency": self.latency.summary_ms(),
            "batches": {
                "count": batches,
                "mean": acts / batches if batches else 0.0,
                "max": max(self.batches, default=0),
                "sizes": {str(size): n for size, n in sorted(self.batches.items())},
            },
        }

    def line(self) -> str:
        """One log line: request counts, errors by code, act latency and batch sizes."""
        snap = self.snapshot()
        lat, bat = snap["latency"], snap["batches"]
        return (
            f"requests {sum(self.requests.values())} ({format_counts(self.requests)}); "
            f"errors {sum(self.errors.values())} ({format_counts(self.errors)}); "
            f"act latency p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms; "
            f"batches {bat['count']}, mean size {bat['mean']:.2f}, max {bat['max']}"
        )
