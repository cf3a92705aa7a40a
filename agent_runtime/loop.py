"""The fixed-rate control loop on the robot host: observe, ask for an action by a deadline, apply.

Ticks sit on an absolute grid, ``start + k * period``, so timing errors never accumulate (no drift).
At each tick the loop observes, asks the policy for an action due by ``tick + deadline``, and applies
either that action or, if none came in time, the fallback (hold the last policy action, or zero),
counting the miss. Anything but a finite action of the spec's shape, on time, is a miss: an error
reply, a spec mismatch, NaN from a local policy, or any exception the action source raises. Every
applied action is clipped to the spec's bounds. If the loop falls a whole period behind (a slow
``observe`` or ``apply``), it skips to the current tick of the grid and counts the skipped ticks as
overruns, rather than running late ticks back to back. When ``apply`` says the robot's episode ended,
before the next tick the loop resets the robot, times the reset (``LoopStats.reset_time``) and moves
the grid on by that time, so a reset never eats the next tick's budget; with the ``hold`` fallback the
new episode starts from the robot's safe action (zero by default), never from the last episode's
held action. A source that keeps state across ticks (:class:`EpisodeAwareSource`, e.g. the queue of a
chunked policy in :mod:`agent_runtime.chunks`) is told of each new episode after the reset, with the
robot's first observation, within the reset's measured time. Misses are logged at most once per 10 s per
kind, so a server that is down or serves another spec does not flood the log at the control rate.

Misses are the policy side's. The robot's own failures are not: an observation with a missing or
extra entry, or a wrong type, dtype or shape, raises :class:`RobotObservationError` at once (it would
miss every tick; NaN or Inf in a float entry is a miss, one bad reading). When the robot's
``reset``, ``observe`` or ``apply`` raises, or the loop is interrupted, the loop applies the robot's
safe action once (best effort), logs its statistics, and re-raises. The deadline counts from the
tick, so the robot's ``observe`` spends part of the policy's budget.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from agent_runtime.client import ClientError
from agent_runtime.robot import Robot, SafeActionRobot
from agent_runtime.spec import (
    NonFiniteObservationError,
    ObservationError,
    PolicySpec,
    SpecError,
    SpecMismatchError,
)
from agent_runtime.stats import LatencyWindow, LogThrottle, format_counts

log = logging.getLogger(__name__)

_LOG_INTERVAL_S = 10.0
"""Least time between two log lines about missed ticks of one kind (on the loop's clock)."""

Fallback = Literal["hold", "zero"]


class ActionSource(Protocol):
    """Where actions come from: a :class:`~agent_runtime.client.PolicyClient`, or a local policy."""

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> np.ndarray:
        """The action, float32 (A,), for one observation; raises by ``deadline`` (``time.monotonic()``) if none."""
        ...


@runtime_checkable
class EpisodeAwareSource(Protocol):
    """An action source that keeps state across ticks, and so must know when an episode starts.

    For example the queue of a chunked policy. The loop calls :meth:`start_episode` after every reset,
    with the robot's first observation, inside the reset's measured time.
    """

    def start_episode(self, observation: Mapping[str, np.ndarray]) -> None:
        """Forget the last episode; prepare for this one (e.g. ask for its first actions)."""
        ...


@dataclass(frozen=True)
class LoopConfig:
    """Rate, deadline and fallback of the control loop."""

    rate_hz: float = 50.0
    """Control rate: one observe/act/apply per period."""
    deadline_ms: float | None = None
    """Time after each tick by which the policy's action must have arrived (the robot's ``observe``
    included); otherwise the fallback is applied then (a local policy is not interrupted: its late
    action is dropped and the fallback applied when it returns). Default: 80% of the period, leaving
    the rest for apply."""
    fallback: Fallback = "hold"
    """Action applied on a missed deadline: hold (the last policy action) or zero (clipped to the bounds)."""
    steps: int | None = None
    """Stop after this many ticks (default: no limit)."""
    duration_s: float | None = None
    """Stop after this many seconds on the tick grid (default: no limit); resets between episodes
    move the grid on by their own time, so they are not counted in it."""
    realtime_priority: int | None = None
    """Run the loop's thread under Linux's SCHED_FIFO at this priority (1-99) for the loop's duration, so
    the kernel preempts other work for it when a tick is due. Needs CAP_SYS_NICE (root, or a granted
    capability). The robot's calls run under it too. Measured on a 2-core VM at 1 kHz over a minute
(BENCHMARKS.md): 24 late ticks against 94 without."""

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
        if self.realtime_priority is not None and not 1 <= self.realtime_priority <= 99:
            raise ValueError(f"realtime_priority is {self.realtime_priority}; SCHED_FIFO priorities are 1 to 99")

    @property
    def period_s(self) -> float:
        """Seconds between ticks."""
        return 1.0 / self.rate_hz

    @property
    def deadline_s(self) -> float:
        """Seconds after a tick by which its action is due."""
        return self.deadline_ms / 1e3 if self.deadline_ms is not None else 0.8 * self.period_s

    @property
    def duration_ticks(self) -> int | None:
        """Ticks of the grid that start within ``duration_s`` (run or skipped); ``None`` without a duration."""
        if self.duration_s is None:
            return None
        return math.ceil(round(self.duration_s * self.rate_hz, 9))  # 0.5 s at 100 Hz: 50, despite float noise


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
    resets: int = 0
    """Resets after an episode ended, before the next tick (the one before the first tick not counted,
    nor an episode that ends on the loop's last tick: the loop stops without resetting it)."""
    reset_time: LatencyWindow = field(default_factory=LatencyWindow)
    """How long each reset took (the first one included); outside the control grid."""
    elapsed_s: float = 0.0
    """Time on the control grid: from the first tick to the end of the last period, resets left out."""
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
            "resets": self.resets,
            "reset_time": self.reset_time.summary_ms(),
            "latency": self.latency.summary_ms(),
            "jitter": self.jitter.summary_ms(),
        }

    def line(self) -> str:
        """One line for a log or a terminal."""
        lat, jit, rst = self.latency.summary_ms(), self.jitter.summary_ms(), self.reset_time.summary_ms()
        return (
            f"{self.steps} steps at {self.achieved_hz:.1f} Hz; "
            f"misses {self.misses} ({format_counts(self.miss_reasons)}), "
            f"overruns {self.overruns}, resets {self.resets} (p50 {rst['p50_ms']:.1f} ms, max {rst['max_ms']:.1f} ms); "
            f"latency p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms; "
            f"jitter p50 {jit['p50_ms']:.3f} ms, p99 {jit['p99_ms']:.3f} ms, max {jit['max_ms']:.3f} ms"
        )


def control_rate(spec: PolicySpec, rate_hz: float | None) -> float:
    """The loop rate for a policy: ``rate_hz`` when given, else the rate it was trained at.

    The trained rate is one over the spec's control period. A given rate that differs from it is
    allowed, with a warning.
    """
    spec_hz = 1.0 / spec.control_period_s
    if rate_hz is None:
        return spec_hz
    if abs(rate_hz - spec_hz) > 1e-6 * spec_hz:
        log.warning(
            "running at %.4g Hz, but the policy was trained at %.4g Hz (control period %.4g s)",
            rate_hz, spec_hz, spec.control_period_s,
        )  # fmt: skip
    return rate_hz


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
    zero = spec.action.clip(np.zeros(spec.action.dim, dtype=np.float32)).astype(np.float32)
    safe = zero
    if isinstance(robot, SafeActionRobot):
        safe = spec.action.clip(_checked_action(robot.safe_action(), spec.action.dim)).astype(np.float32)
    stats = LoopStats()
    with _realtime(config.realtime_priority):
        try:
            return _drive(robot, policy, config, stop, clock, sleep, stats, safe, zero)
        except BaseException as exc:  # a robot failure, or an interrupt: leave the robot on its safe action
            _stop_on_safe_action(robot, safe, exc, stats)
            raise


@contextmanager
def _realtime(priority: int | None) -> Iterator[None]:
    """SCHED_FIFO at ``priority`` for this thread during the block (nothing when ``None``), then the old policy back."""
    if priority is None:
        yield
        return
    if not hasattr(os, "sched_setscheduler"):
        raise OSError("realtime_priority needs Linux's SCHED_FIFO, which this system does not offer")
    old_policy, old_param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        raise PermissionError(
            "realtime_priority needs CAP_SYS_NICE: run as root, or grant it (setcap cap_sys_nice+ep on the "
            "python binary), or leave realtime_priority unset"
        ) from None
    try:
        yield
    finally:
        os.sched_setscheduler(0, old_policy, old_param)


def _stop_on_safe_action(robot: Robot, safe: np.ndarray, exc: BaseException, stats: LoopStats) -> None:
    """Apply the safe action once (best effort) as the loop stops on ``exc``, and log that it did."""
    try:
        robot.apply(safe.copy())
    except BaseException as again:  # the robot is failing: log both; the caller raises the first
        outcome = f"applying the robot's safe action then failed too ({again!r})"
    else:
        outcome = "applied the robot's safe action once"
    log.error("the control loop stopped on %r and %s; at the stop: %s", exc, outcome, stats.line())


def _drive(
    robot: Robot,
    policy: ActionSource,
    config: LoopConfig,
    stop: Callable[[], bool] | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    stats: LoopStats,
    safe: np.ndarray,
    zero: np.ndarray,
) -> LoopStats:
    spec = robot.spec
    period, budget, dim = config.period_s, config.deadline_s, spec.action.dim
    last_policy_action = safe
    log_miss = _MissLog(config.fallback, clock)
    limit = math.inf if config.duration_ticks is None else config.duration_ticks
    began = clock()
    robot.reset()
    _start_episode(robot, policy)
    start = clock()
    stats.reset_time.add(start - began)
    tick_index = 0
    ended = False
    while (
        tick_index < limit
        and not (config.steps is not None and stats.steps >= config.steps)
        and not (stop is not None and stop())
    ):
        if ended:
            # A new episode (reset here, after the stop checks: a finished run is not reset once more).
            # No action of the last episode carries over, and the grid moves by the reset's own time.
            began = clock()
            robot.reset()
            _start_episode(robot, policy)
            took = clock() - began
            stats.resets += 1
            stats.reset_time.add(took)
            last_policy_action = safe
            start += took
        tick = start + tick_index * period
        now = clock()
        if now < tick:
            sleep(tick - now)
            now = clock()
        if now - tick >= period:
            skipped = int(min((now - tick) // period, limit - tick_index))  # only ticks within the duration
            stats.overruns += skipped
            tick_index += skipped
            if tick_index >= limit:
                break
            tick = start + tick_index * period
        stats.jitter.add(max(0.0, now - tick))
        deadline = tick + budget
        observation = robot.observe()
        _check_robot_observation(spec, observation)
        try:
            raw_action = policy.act(observation, deadline)
            received = clock()
            if received > deadline:
                raise ClientError(f"the action came {(received - deadline) * 1e3:.2f} ms after the deadline")
            action = _checked_action(raw_action, dim)
        except Exception as exc:  # no usable action this tick, whatever the reason: the robot gets its fallback
            applied = last_policy_action if config.fallback == "hold" else zero
            stats.misses += 1
            stats.miss_reasons[_miss_reason(exc)] += 1
            log_miss(exc, stats)
        else:
            stats.latency.add(received - tick)
            last_policy_action = spec.action.clip(action).astype(np.float32)
            applied = last_policy_action
            stats.hits += 1
        ended = bool(robot.apply(applied.copy()))  # a fresh array each tick; a numpy bool too
        stats.steps += 1
        tick_index += 1
        stats.elapsed_s = tick_index * period  # so far; exact at the end, below
    # The last tick's period ends at the next tick of the grid: a perfect loop's rate is exactly rate_hz.
    stats.elapsed_s = max(clock(), start + tick_index * period) - start
    return stats


def _check_robot_observation(spec: PolicySpec, observation: Any) -> None:
    """Raise :class:`RobotObservationError` if the robot's observation breaks the spec by more than its values.

    A missing or unexpected entry, or a wrong type, dtype or shape, is the robot's bug and would miss
    every tick: the loop stops at once with the reason. NaN or Inf in a float entry can be one bad
    sensor reading: the tick misses (the policy refuses it) and the loop goes on.
    """
    try:
        spec.check_observation(observation)
    except NonFiniteObservationError:
        pass  # a bad reading: the policy refuses it and this tick misses
    except ObservationError as exc:
        raise RobotObservationError(
            f"the robot's observe() does not match its spec: {exc}. Return exactly the spec's entries, "
            "as numpy arrays of its dtypes and shapes (numpy's default float64 is not float32)"
        ) from None


class RobotObservationError(ObservationError):
    """The robot's ``observe()`` returned entries, dtypes or shapes its spec does not state."""


def _start_episode(robot: Robot, policy: ActionSource) -> None:
    """Tell an episode-aware source that an episode starts; its failure only costs the first ticks."""
    if not isinstance(policy, EpisodeAwareSource):
        return
    observation = robot.observe()
    _check_robot_observation(robot.spec, observation)
    try:
        policy.start_episode(observation)
    except Exception:  # the ticks that follow miss and take the fallback, as for any failing source
        log.exception("the action source could not start the episode; its first ticks may miss")


class BadActionError(ValueError):
    """The action source returned something that is not a finite float32 (A,) action."""

    code = "bad_action"


def _checked_action(action: Any, dim: int) -> np.ndarray:
    """``action`` as float32 (dim,); raises :class:`BadActionError` if it has another shape or is not finite."""
    try:
        out = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise BadActionError(f"the action source returned a {type(action).__name__}, not numbers") from exc
    if out.shape != (dim,):
        raise BadActionError(f"the action source returned shape {out.shape}; the spec's action has shape ({dim},)")
    if not np.isfinite(out).all():
        raise BadActionError("the action source returned an action with NaN or Inf")
    return out


def _miss_reason(exc: Exception) -> str:
    if isinstance(exc, (ClientError, BadActionError)):
        return exc.code
    if isinstance(exc, SpecMismatchError):
        return "spec_mismatch"
    return type(exc).__name__


class _MissLog:
    """Logs why ticks apply the fallback: each kind of reason at most once per ``_LOG_INTERVAL_S``."""

    def __init__(self, fallback: Fallback, clock: Callable[[], float]) -> None:
        self._fallback = fallback
        self._mismatch = LogThrottle(_LOG_INTERVAL_S, clock)
        self._unexpected = LogThrottle(_LOG_INTERVAL_S, clock)
        self._miss = LogThrottle(_LOG_INTERVAL_S, clock)

    def __call__(self, exc: Exception, stats: LoopStats) -> None:
        if isinstance(exc, SpecMismatchError):
            # Persistent until the server serves a matching policy: say which fields differ, up front.
            if self._mismatch() is None:
                return
            count = stats.miss_reasons["spec_mismatch"]
            state = (
                "does not match the robot's" if count == 1 else f"still does not match the robot's after {count} ticks"
            )
            log.error(
                "the served policy's spec %s; applying the %s fallback until it does. Differences:\n  %s",
                state,
                self._fallback,
                "\n  ".join(exc.differences),
            )
        elif isinstance(exc, (ClientError, SpecError)):
            if self._miss() is not None:
                log.warning("missed tick (%d so far), applying the %s fallback: %s", stats.misses, self._fallback, exc)
        elif self._unexpected() is not None:
            log.error(
                "the action source raised %s (%d misses so far), applying the %s fallback: %s",
                type(exc).__name__,
                stats.misses,
                self._fallback,
                exc,
                exc_info=exc,
            )
