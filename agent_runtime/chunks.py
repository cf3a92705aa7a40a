"""Action chunks on the robot host: a queue of future actions, refilled early, so network delay costs no tick.

A chunked policy (its spec has an ``action_chunk``) answers one observation with H actions: the first
for the control step the observation was taken at, then one per ``period_s``. :class:`ChunkedActions`
is the control loop's action source for such a policy. It keeps a queue of actions indexed by control
step (counted on the loop's clock from the episode's first tick, so steps the loop skips are skipped
in the queue too) and at every tick:

1. takes the in-flight request's answer if it has arrived, and merges it into the queue by step:
   ``replace`` (the newer chunk wins where both have an action) or ``blend`` (a weighted mean of the
   two, the newer weighted ``blend_weight``); steps already executed are dropped;
2. asks for a new chunk with this tick's observation every ``replan_steps`` steps (every tick by
   default), and in any case early enough: when the steps covered from this one on, by the queue and
   by the chunks already asked for, would run out before an answer could arrive, going by the round
   trips it has measured (a high percentile of the recent ones, plus ``margin_steps``). Several
   requests may be in flight; one whose whole chunk would be past is given up, and so is one
   answered with an error. A chunk never overrides actions queued from a newer one (replies can
   overtake each other);
3. returns this step's action. When the round trip planned for fits before the tick's deadline (a
   fast link), it first waits for the chunk it has just asked for, so the tick's own observation
   chooses its action; otherwise the queued action, computed from an earlier observation, is taken.
   An empty queue is a miss, and the loop applies its fallback, as it does for a per-step policy's
   late reply; only then does it wait, up to the tick's deadline, for the requests in flight.

At an episode's start (the loop calls :meth:`ChunkedActions.start_episode` after resetting the robot)
the queue is emptied, no action of the last episode carries over, and the first chunk is asked for
with the reset's first observation and awaited before the first tick, within ``prime_timeout_s``.
The loop counts that wait in the reset's time, outside the control grid.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from agent_runtime.client import ClientError, DeadlineExceeded, PolicyClient, ServerError

Merge = Literal["replace", "blend"]


class QueueEmpty(ClientError):
    """No queued action for this control step (the chunk that would cover it has not arrived)."""

    code = "queue_empty"


@dataclass(frozen=True)
class ChunkConfig:
    """How the robot host uses a chunked policy's answers."""

    merge: Merge = "replace"
    """Where a new chunk and the queue both have an action for a step: ``replace`` takes the new one;
    ``blend`` takes ``blend_weight * new + (1 - blend_weight) * queued`` (temporal ensembling)."""
    blend_weight: float = 0.5
    """The newer chunk's weight under ``blend``."""
    margin_steps: int = 1
    """Steps of slack on top of the measured round trip when deciding to ask for the next chunk."""
    replan_steps: int | None = 1
    """Also ask for a new chunk whenever this many steps have passed since the last request, however
    much is queued: 1 asks at every tick (a chunk computed from the freshest observation replaces, or
    blends with, the older one's actions: closed-loop control that sees through the delay); None asks
    only when the queue would otherwise run dry (fewest requests, longest open-loop stretches)."""
    latency_quantile: float = 90.0
    """Percentile of the recent round trips taken as the one to plan for."""
    latency_window: int = 32
    """How many recent round trips the estimate uses."""
    prime_timeout_s: float = 2.0
    """Longest wait for an episode's first chunk, before its first tick."""

    def __post_init__(self) -> None:
        if self.merge not in ("replace", "blend"):
            raise ValueError(f"merge is {self.merge!r}; it must be 'replace' or 'blend'")
        if not 0 < self.blend_weight <= 1:
            raise ValueError(f"blend_weight is {self.blend_weight}; it must be in (0, 1]")
        if self.replan_steps is not None and self.replan_steps < 1:
            raise ValueError(f"replan_steps is {self.replan_steps}; it must be at least 1 (or None)")
        if self.margin_steps < 0:
            raise ValueError(f"margin_steps is {self.margin_steps}; it must be >= 0")
        if not 0 < self.latency_quantile <= 100:
            raise ValueError(f"latency_quantile is {self.latency_quantile}; it must be in (0, 100]")
        if self.latency_window < 1:
            raise ValueError(f"latency_window is {self.latency_window}; it must be at least 1")
        if not self.prime_timeout_s > 0:
            raise ValueError(f"prime_timeout_s is {self.prime_timeout_s}; it must be positive")


@dataclass
class ChunkStats:
    """What the queue did: chunks asked for and merged, requests given up, steps served from the queue."""

    requests: int = 0
    chunks: int = 0
    given_up: int = 0
    """Requests unanswered when their chunk would have been needed, or answered with an error."""
    served: int = 0
    """Steps answered from the queue."""
    empty: int = 0
    """Steps with nothing queued (misses)."""


class _InFlight(NamedTuple):
    step: int
    """The control step of the observation sent: the chunk's first action is for it."""
    sent_s: float


class ChunkedActions:
    """The control loop's action source for a policy that answers with action chunks.

    Args:
        client: a connected :class:`PolicyClient` whose served spec has an ``action_chunk``.
        config: merging and planning.
        clock: the loop's clock (monotonic seconds); deadlines are on it.

    Raises:
        ValueError: the served policy answers one action at a time (use the client itself).
    """

    def __init__(
        self, client: PolicyClient, config: ChunkConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        spec = client.server_spec
        if spec is None or spec.action_chunk is None:
            raise ValueError("the served policy has no action chunk in its spec; use the PolicyClient itself")
        self.client = client
        self.config = config or ChunkConfig()
        self.stats = ChunkStats()
        self._clock = clock
        self._period = spec.action_chunk.period_s
        self._horizon = spec.action_chunk.horizon
        self._round_trips: deque[float] = deque(maxlen=self.config.latency_window)
        self._queue: dict[int, tuple[np.ndarray, int]] = {}  # step -> (action, step of the chunk it came from)
        self._in_flight: dict[int, _InFlight] = {}  # request id -> what it asked
        self._epoch: float | None = None
        self._last_request_step = 0  # the primed chunk counts as asked for at step 0

    # -- the loop's side --------------------------------------------------------------------------

    def start_episode(self, observation: Mapping[str, np.ndarray]) -> None:
        """A new episode: forget the queue, ask for its first chunk with ``observation`` and wait for it.

        The chunk's first action is for the episode's first tick (the robot holds still in between).
        If it does not come within ``prime_timeout_s`` the episode starts anyway, and its first ticks
        are misses until a chunk arrives.
        """
        self._queue.clear()
        self._in_flight.clear()  # their replies are dropped as stale from now on
        self._epoch = None
        self._last_request_step = 0
        deadline = self._clock() + self.config.prime_timeout_s
        try:
            request_id = self.client.request_act(observation, deadline)
            sent = self._clock()
            self.stats.requests += 1
            chunk = self.client.receive_act(request_id, deadline)
        except ClientError:
            self.stats.given_up += 1
            return
        self._round_trips.append(self._clock() - sent)
        self._merge(np.atleast_2d(chunk), 0, now_step=0)

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> np.ndarray:
        """This tick's action from the queue, asking for the next chunk early; raises if none is queued."""
        now = self._clock()
        if self._epoch is None:
            self._epoch = now
        step = round((now - self._epoch) / self._period)
        self._collect(step, None)
        for old in [s for s in self._queue if s < step]:
            del self._queue[old]
        for request_id in [r for r, f in self._in_flight.items() if f.step + self._horizon <= step]:
            del self._in_flight[request_id]  # its whole chunk would be past: it can no longer help
            self.stats.given_up += 1
        replan = self.config.replan_steps
        due = replan is not None and step - self._last_request_step >= replan
        if due or self._covered_until(step) - step < self._steps_needed():
            fresh = self._request(observation, step, now)
            if fresh is not None and self.latency_s() < deadline - self._clock():
                # A round trip fits before the deadline: this tick's own observation can choose its action.
                self._collect(step, deadline, until=fresh)
        if step not in self._queue and self._in_flight:
            self._collect(step, deadline)  # nothing queued: only a reply in flight can save this tick
        entry = self._queue.pop(step, None)
        if entry is None:
            self.stats.empty += 1
            raise QueueEmpty(f"no action queued for step {step} (the chunk covering it has not arrived)")
        self.stats.served += 1
        return entry[0]

    # -- planning ---------------------------------------------------------------------------------

    def latency_s(self) -> float:
        """The round trip planned for: a high percentile of the recent ones (one period before any)."""
        if not self._round_trips:
            return self._period
        return float(np.percentile(np.fromiter(self._round_trips, float), self.config.latency_quantile))

    def _steps_needed(self) -> int:
        """Steps an answer takes to arrive, as planned, plus the margin."""
        return math.ceil(self.latency_s() / self._period) + self.config.margin_steps

    def _covered_until(self, step: int) -> int:
        """The first step from ``step`` on that neither the queue nor a chunk in flight will cover."""
        end = step
        while end in self._queue:
            end += 1
        for flight in self._in_flight.values():
            end = max(end, flight.step + self._horizon)
        return end

    def _request(self, observation: Mapping[str, np.ndarray], step: int, now: float) -> int | None:
        """Ask for a chunk starting at ``step``; returns the request's id (None if it could not be sent)."""
        assert self._epoch is not None
        # The server may drop it once even its chunk's last action would be too late.
        useful_until = self._epoch + (step + self._horizon - 1) * self._period
        try:
            request_id = self.client.request_act(observation, max(useful_until, now + self._period))
        except ClientError:
            self.stats.given_up += 1
            return None
        self.stats.requests += 1
        self._in_flight[request_id] = _InFlight(step, now)
        self._last_request_step = step
        return request_id

    def _collect(self, step: int, deadline: float | None, until: int | None = None) -> None:
        """Merge every chunk in flight that has arrived, waiting until ``deadline`` if it is given.

        It waits for request ``until`` when that is given, else for anything that queues an action for ``step``.
        """
        while self._in_flight:
            try:
                request_id, chunk = self.client.receive_any_act(self._in_flight.keys(), deadline)
            except DeadlineExceeded:
                return
            except ServerError as exc:  # e.g. its deadline passed in the server: ask again at the next tick
                if self._in_flight.pop(exc.request_id, None) is not None:  # type: ignore[arg-type]
                    self.stats.given_up += 1
                continue
            except ClientError:  # an unreadable reply: the requests stay in flight until they expire
                return
            flight = self._in_flight.pop(request_id)
            self._round_trips.append(self._clock() - flight.sent_s)
            self._merge(np.atleast_2d(chunk), flight.step, now_step=step)
            done = request_id == until if until is not None else step in self._queue
            if done:
                deadline, until = None, None  # served: take only what else has already arrived

    def _merge(self, chunk: np.ndarray, first_step: int, now_step: int) -> None:
        self.stats.chunks += 1
        blend = self.config.merge == "blend"
        w = self.config.blend_weight
        for i, action in enumerate(chunk):
            s = first_step + i
            if s < now_step:
                continue  # already executed (or missed)
            queued = self._queue.get(s)
            if queued is None:
                self._queue[s] = (action, first_step)
            elif queued[1] > first_step:
                continue  # the queue holds a newer chunk's action: an older chunk never overrides it
            elif blend:
                self._queue[s] = ((w * action + (1 - w) * queued[0]).astype(np.float32), first_step)
            else:
                self._queue[s] = (action, first_step)
