"""The fixed-rate control loop on the robot host: observe, ask for an action by a deadline, apply.

Ticks sit on an absolute grid, ``start + k * period``, so timing errors never accumulate (no drift).
At each tick the loop observes, asks the policy for an action due by ``tick + deadline``, and applies
either that action or, if none came in time, the fallback (hold the last policy action, or zero),
counting the miss. Every applied action is clipped to the spec's bounds. If the loop falls a whole
period behind (a slow ``observe`` or ``apply``), it skips to the current tick of the grid and counts
the skipped ticks as overruns, rather than running late ticks back to back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from agent_runtime.client import ClientError
from agent_runtime.robot import Robot
from agent_runtime.spec import SpecError
from agent_runtime.stats import LatencyWindow, format_counts

log = logging.getLogger(__name__)

Fallback = Literal["hold", "zero"]


class ActionSource(Protocol):
    """Where actions come from: a :class:`~agent_runtime.client.PolicyClient`, or a local policy."""

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> np.ndarray:
        """The action, float32 (A,), for one observation; raises by ``deadline`` (``time.monotonic()``) if none."""
        ...


@dataclass(frozen=True)
class LoopConfig:
    """Rate, deadline and fallback of the control loop."""

    rate_hz: float = 50.0
    """Control rate: one observe/act/apply per period."""
    deadline_ms: float | None = None
    """Time after each tick by which the policy's action must have arrived; otherwise the fallback is
    applied then. Default: 80% of the period, leaving the rest for observe and apply."""
    fallback: Fallback = "hold"
    """Action applied on a missed deadline: hold (the last policy action) or zero (clipped to the bounds)."""
    steps: int | None = None
    """Stop after this many ticks (default: no limit)."""
    duration_s: float | None = None
    """Stop after this many seconds (default: no limit)."""

    def __post_init__(self) -> None:
        if not 0 < self.rate_hz <= 10_000:
            raise ValueError(f"rate_hz is {self.rate_hz}; it must be in (0, 10000]")
        if self.deadline_ms is not None and not 0 < self.deadline_ms <= self.period_s * 1e3:
            raise ValueError(
                f"deadline_ms is {self.deadline_ms}; it must be positive and within the period "
                f"({self.period_s * 1e3:g} ms at {self.rate_hz:g} Hz)"
            )
        if self.fallback not in ("hold", "zero"):
            raise ValueError(f"fallback is {self.fallback!r}; it must be 'hold' or 'zero'")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps is {self.steps}; it must be at least 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s is {self.duration_s}; it must be positive")

    @property
    def period_s(self) -> float:
        """Seconds between ticks."""
        return 1.0 / self.rate_hz

    @property
    def deadline_s(self) -> float:
        """Seconds after a tick by which its action is due."""
        return self.deadline_ms / 1e3 if self.deadline_ms is not None else 0.8 * self.period_s


@dataclass
class LoopStats:
    """What the loop did. ``latency``: tick to action received (hits only); ``jitter``: tick to loop start."""

    steps: int = 0
    hits: int = 0
    misses: int = 0
    """Ticks that applied the fallback."""
    miss_reasons: Counter[str] = field(default_factory=Counter)
    overruns: int = 0
    """Ticks skipped because the loop fell a whole period behind."""
    elapsed_s: float = 0.0
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    jitter: LatencyWindow = field(default_factory=LatencyWindow)

    @property
    def achieved_hz(self) -> float:
        """Ticks per second actually run."""
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON-ready)."""
        return {
            "steps": self.steps,
            "achieved_hz": self.achieved_hz,
            "hits": self.hits,
            "misses": self.misses,
            "miss_reasons": dict(self.miss_reasons),
            "overruns": self.overruns,
            "latency": self.latency.summary_ms(),
            "jitter": self.jitter.summary_ms(),
        }

    def line(self) -> str:
        """One line for a log or a terminal."""
        lat, jit = self.latency.summary_ms(), self.jitter.summary_ms()
        return (
            f"{self.steps} steps at {self.achieved_hz:.1f} Hz; "
            f"misses {self.misses} ({format_counts(self.miss_reasons)}), "
            f"overruns {self.overruns}; latency p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms; "
            f"jitter p50 {jit['p50_ms']:.3f} ms, p99 {jit['p99_ms']:.3f} ms, max {jit['max_ms']:.3f} ms"
        )


def run_loop(
    robot: Robot,
    policy: ActionSource,
    config: LoopConfig,
    stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LoopStats:
    """Drive ``robot`` with ``policy`` at ``config.rate_hz`` until a step or time limit, or ``stop()``.

    Args:
        robot: the robot; reset once before the first tick.
        policy: the action source, called once per tick with that tick's deadline.
        config: rate, deadline, fallback, limits.
        stop: polled once per tick; the loop ends when it returns true.
        clock: monotonic seconds (injectable for tests); ``policy`` deadlines are on this clock.
        sleep: sleeps the given seconds (injectable with ``clock``).

    Returns:
        The loop's statistics.
    """
    spec = robot.spec
    period, budget = config.period_s, config.deadline_s
    zero = spec.action.clip(np.zeros(spec.action.dim, dtype=np.float32)).astype(np.float32)
    last_policy_action = zero
    stats = LoopStats()
    robot.reset()
    start = clock()
    tick_index = 0
    while not (config.steps is not None and stats.steps >= config.steps) and not (stop is not None and stop()):
        tick = start + tick_index * period
        if config.duration_s is not None and tick - start >= config.duration_s:
            break
        now = clock()
        if now < tick:
            sleep(tick - now)
            now = clock()
        if now - tick >= period:
            skipped = int((now - tick) // period)
            stats.overruns += skipped
            tick_index += skipped
            tick = start + tick_index * period
        stats.jitter.add(max(0.0, now - tick))
        deadline = tick + budget
        try:
            action = policy.act(robot.observe(), deadline)
            received = clock()
            if received > deadline:
                raise ClientError(f"the action came {(received - deadline) * 1e3:.2f} ms after the deadline")
            stats.latency.add(received - tick)
            last_policy_action = spec.action.clip(np.asarray(action, dtype=np.float32)).astype(np.float32)
            applied = last_policy_action
            stats.hits += 1
        except (ClientError, SpecError) as exc:
            applied = last_policy_action if config.fallback == "hold" else zero
            stats.misses += 1
            stats.miss_reasons[getattr(exc, "code", type(exc).__name__)] += 1
            if stats.misses == 1 or stats.misses % 1000 == 0:
                log.warning(
                    "missed deadline (%d so far), applying the %s fallback: %s", stats.misses, config.fallback, exc
                )
        robot.apply(applied)
        stats.steps += 1
        tick_index += 1
    # The last tick's period ends at the next tick of the grid: a perfect loop's rate is exactly rate_hz.
    stats.elapsed_s = max(clock(), start + tick_index * period) - start
    return stats
