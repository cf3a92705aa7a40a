"""The control loop: absolute deadlines (no drift), fallback on a miss, clipping, and the rate held in real time."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
import zmq

from agent_runtime.client import ClientConfig, DeadlineExceeded, PolicyClient
from agent_runtime.loop import LoopConfig, RobotObservationError, control_rate, run_loop
from agent_runtime.spec import PolicySpec, SpecMismatchError
from tests.agent_runtime.conftest import FakePolicy, running_server, state_obs, state_spec

SLACK_S = 0.1  # scheduling slack on a loaded 2-core CI machine


class FakeClock:
    """Simulated time: ``sleep`` advances it, and so do the fake robot and policy to model their cost."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


class FakeRobot:
    """Observes an increasing counter; records when each action was applied (on ``clock``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, spec: PolicySpec | None = None) -> None:
        self._spec = spec or state_spec()
        self.clock = clock
        self.observed_at: list[float] = []
        self.applied: list[tuple[float, np.ndarray]] = []
        self.resets = 0
        self.reset_at = 0.0
        self.apply_cost_s: Callable[[int], float] = lambda step: 0.0
        self.on_apply: Callable[[int], None] = lambda step: None

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    def reset(self) -> None:
        self.resets += 1
        self.reset_at = self.clock()

    def observe(self) -> dict[str, np.ndarray]:
        self.observed_at.append(self.clock())
        return state_obs(0.1 * len(self.observed_at))

    def apply(self, action: np.ndarray) -> None:
        self.applied.append((self.clock(), action.copy()))
        if isinstance(self.clock, FakeClock):
            self.clock.now += self.apply_cost_s(len(self.applied))
        self.on_apply(len(self.applied))

    @property
    def actions(self) -> np.ndarray:
        return np.array([a for _, a in self.applied])


class ScriptedPolicy:
    """Answers with the observation's first element after ``cost_s(step)`` of fake time; misses when told."""

    def __init__(self, clock: FakeClock, cost_s: Callable[[int], float], miss: Callable[[int], bool] = lambda s: False):
        self.clock, self.cost_s, self.miss = clock, cost_s, miss
        self.calls = 0

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> np.ndarray:
        self.calls += 1
        if self.miss(self.calls):
            self.clock.now = deadline  # a client waits until the deadline, then gives up
            raise DeadlineExceeded("no reply")
        self.clock.now += self.cost_s(self.calls)
        return np.full(2, observation["state"][0], dtype=np.float32)


def test_ticks_sit_on_an_absolute_grid_without_drift():
    clock = FakeClock()
    robot = FakeRobot(clock)
    # Every step costs a different, irregular amount; a loop that slept a fixed period would drift.
    policy = ScriptedPolicy(clock, cost_s=lambda step: 0.001 + 0.003 * (step % 3))
    stats = run_loop(robot, policy, LoopConfig(rate_hz=100, steps=200), clock=clock, sleep=clock.sleep)
    ticks = np.array(robot.observed_at) - robot.observed_at[0]
    np.testing.assert_allclose(ticks, np.arange(200) * 0.01, atol=1e-9)
    assert stats.steps == 200 and stats.misses == 0 and stats.overruns == 0 and robot.resets == 1
    assert stats.achieved_hz == pytest.approx(100, rel=0.02)


def test_a_loop_that_falls_behind_skips_to_the_grid_and_counts_overruns():
    clock = FakeClock()
    robot = FakeRobot(clock)
    robot.apply_cost_s = lambda step: 0.025 if step == 5 else 0.0  # one apply takes 2.5 periods
    policy = ScriptedPolicy(clock, cost_s=lambda step: 0.001)
    stats = run_loop(robot, policy, LoopConfig(rate_hz=100, steps=10), clock=clock, sleep=clock.sleep)
    ticks = (np.array(robot.observed_at) - robot.observed_at[0]) / 0.01
    # Ticks 0-4 on time; the fifth apply ends at 4.1 + 2.5 = 6.6 periods: tick 5 is skipped, and tick 6
    # starts 0.6 periods late (jitter) instead of ticks 5 and 6 running back to back.
    np.testing.assert_allclose(ticks[:5], [0, 1, 2, 3, 4], atol=1e-6)
    assert ticks[5] == pytest.approx(6.6, abs=1e-6)
    np.testing.assert_allclose(ticks[6:], [7, 8, 9, 10], atol=1e-6)
    assert stats.overruns == 1
    assert stats.jitter.max_s == pytest.approx(0.006, abs=1e-6)


@pytest.mark.parametrize(("fallback", "expected"), [("hold", 0.2), ("zero", 0.0)])
def test_a_missed_deadline_applies_the_fallback_at_the_deadline(fallback, expected):
    clock = FakeClock()
    robot = FakeRobot(clock)
    policy = ScriptedPolicy(clock, cost_s=lambda step: 0.002, miss=lambda step: step in (3, 4))
    config = LoopConfig(rate_hz=50, deadline_ms=8, fallback=fallback, steps=6)
    stats = run_loop(robot, policy, config, clock=clock, sleep=clock.sleep)
    actions = robot.actions[:, 0]
    np.testing.assert_allclose(actions, [0.1, 0.2, expected, expected, 0.5, 0.6], rtol=1e-6)
    start = robot.observed_at[0]
    for step in (2, 3):  # the misses: applied exactly at tick + 8 ms
        assert robot.applied[step][0] == pytest.approx(start + step * 0.02 + 0.008)
    assert stats.misses == 2 and stats.hits == 4 and stats.miss_reasons == {"timeout": 2}


def test_zero_fallback_is_clipped_into_the_bounds():
    spec = state_spec()
    spec = PolicySpec(
        spec.observations,
        type(spec.action)(spec.action.quantities, (0.5, 0.5), (1.0, 1.0)),
        spec.control_period_s,
        spec.action_repeat,
        spec.provenance,
    )
    clock = FakeClock()
    robot = FakeRobot(clock, spec)
    policy = ScriptedPolicy(clock, cost_s=lambda step: 0.0, miss=lambda step: True)
    run_loop(robot, policy, LoopConfig(fallback="zero", steps=2), clock=clock, sleep=clock.sleep)
    np.testing.assert_array_equal(robot.actions, [[0.5, 0.5], [0.5, 0.5]])


def test_actions_are_clipped_to_the_bounds():
    clock = FakeClock()
    robot = FakeRobot(clock)

    class Wild(ScriptedPolicy):
        def act(self, observation, deadline):
            return np.array([5.0, -7.0], dtype=np.float32)

    run_loop(robot, Wild(clock, lambda s: 0.0), LoopConfig(steps=3), clock=clock, sleep=clock.sleep)
    np.testing.assert_array_equal(robot.actions, [[1.0, -1.0]] * 3)


def test_an_action_that_comes_after_the_deadline_is_not_applied():
    clock = FakeClock()
    robot = FakeRobot(clock)
    policy = ScriptedPolicy(clock, cost_s=lambda step: 0.045 if step == 2 else 0.001)  # step 2 returns late
    stats = run_loop(robot, policy, LoopConfig(rate_hz=20, steps=3), clock=clock, sleep=clock.sleep)
    np.testing.assert_allclose(robot.actions[:, 0], [0.1, 0.1, 0.3], rtol=1e-6)  # held, not the late 0.2
    assert stats.misses == 1 and stats.miss_reasons == {"client_error": 1}


def test_the_loop_holds_its_rate_in_real_time():
    """Only what scheduling delays on a loaded machine cannot break: every tick of the grid is run or
    counted as skipped, none runs early or past the duration, and none drifts a period off the grid."""
    robot = FakeRobot()

    class Instant:
        def act(self, observation, deadline):
            return np.zeros(2, np.float32)

    period = 0.01
    stats = run_loop(robot, Instant(), LoopConfig(rate_hz=100, duration_s=0.5))
    # A stall of a whole period on a busy machine skips a tick (an overrun) rather than shifting the grid.
    assert stats.steps + stats.overruns == 50 and stats.steps >= 1
    # Tick i is grid tick i + (ticks skipped before it): never earlier than i periods after the start
    # (the grid starts just after reset), and the last one starts within the 0.5 s.
    since_reset = np.array(robot.observed_at) - robot.reset_at
    assert np.all(since_reset >= np.arange(stats.steps) * period)
    ticks = np.array(robot.observed_at) - robot.observed_at[0]
    assert ticks[-1] < 50 * period
    # A loop that slept a fixed period after each tick would fall ever further behind the grid; this
    # one, with no ticks skipped, keeps each tick within a period of its grid point for all 50.
    if stats.overruns == 0:
        assert np.all(np.abs(ticks - np.arange(50) * period) < period)


def test_a_tick_skipped_to_past_the_duration_is_not_run():
    clock = FakeClock()
    robot = FakeRobot(clock)
    robot.apply_cost_s = lambda step: 0.025 if step == 4 else 0.0  # the fourth apply ends in tick 5's period
    policy = ScriptedPolicy(clock, cost_s=lambda step: 0.001)
    stats = run_loop(robot, policy, LoopConfig(rate_hz=100, duration_s=0.05), clock=clock, sleep=clock.sleep)
    # Ticks 0-3 run; the loop wakes at 5.6 periods and skips tick 4, which lands on tick 5: past the 0.05 s.
    assert (stats.steps, stats.overruns) == (4, 1)


class Returning:
    """An action source that returns ``actions[step]`` (1-based), whatever it is."""

    def __init__(self, actions: dict[int, Any], default: Callable[[int], Any]) -> None:
        self.actions, self.default, self.calls = actions, default, 0

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> Any:
        self.calls += 1
        value = self.actions.get(self.calls, self.default(self.calls))
        if isinstance(value, BaseException):
            raise value
        return value


class Checking(Returning):
    """Like :class:`Returning`, but refuses an observation off the spec, as every real source does."""

    def __init__(self, default: Callable[[int], Any]) -> None:
        super().__init__({}, default)

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> Any:
        state_spec().check_observation(observation)
        return super().act(observation, deadline)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(np.array([np.nan, 0.0], np.float32), id="NaN"),
        pytest.param(np.array([0.0, np.inf], np.float32), id="Inf"),
        pytest.param(np.zeros(3, np.float32), id="too long"),
        pytest.param(np.zeros((1, 2), np.float32), id="batch axis"),
        pytest.param(np.float32(0.5), id="scalar"),
        pytest.param(np.array(["a", "b"]), id="strings"),
        pytest.param(None, id="None"),
    ],
)
def test_an_action_that_is_not_finite_or_has_the_wrong_shape_is_never_applied(bad):
    clock = FakeClock()
    robot = FakeRobot(clock)
    policy = Returning({3: bad}, default=lambda step: np.full(2, 0.1 * step, np.float32))
    stats = run_loop(robot, policy, LoopConfig(rate_hz=100, steps=4), clock=clock, sleep=clock.sleep)
    np.testing.assert_allclose(robot.actions, [[0.1, 0.1], [0.2, 0.2], [0.2, 0.2], [0.4, 0.4]], rtol=1e-6)
    assert stats.misses == 1 and stats.miss_reasons == {"bad_action": 1}


def test_any_exception_from_the_policy_applies_the_fallback_and_the_loop_goes_on(caplog):
    clock = FakeClock()
    robot = FakeRobot(clock)
    failures = {2: RuntimeError("inference crashed"), 3: zmq.ZMQError(), 5: RuntimeError("again")}
    policy = Returning(failures, default=lambda step: np.full(2, 0.1 * step, np.float32))
    config = LoopConfig(rate_hz=100, steps=6, fallback="zero")
    stats = run_loop(robot, policy, config, clock=clock, sleep=clock.sleep)
    np.testing.assert_allclose(robot.actions[:, 0], [0.1, 0.0, 0.0, 0.4, 0.0, 0.6], rtol=1e-6)
    assert stats.miss_reasons == {"RuntimeError": 2, "ZMQError": 1} and stats.hits == 3
    # Logged with its traceback the first time, then at most once per interval (here: within 60 ms).
    failed = [r for r in caplog.records if r.exc_info is not None]
    assert len(failed) == 1 and "inference crashed" in failed[0].getMessage()


def test_an_exception_from_the_robot_is_not_swallowed():
    clock = FakeClock()
    robot = FakeRobot(clock)

    def driver_gone(step: int) -> None:
        if step == 2:
            raise OSError("motor driver gone")

    robot.on_apply = driver_gone
    policy = ScriptedPolicy(clock, cost_s=lambda step: 0.001)
    with pytest.raises(OSError, match="motor driver gone"):
        run_loop(robot, policy, LoopConfig(rate_hz=100, steps=5), clock=clock, sleep=clock.sleep)
    # As it stops, the loop applies the safe action (zero here) once more: the robot is left safe.
    assert len(robot.applied) == 3
    np.testing.assert_array_equal(robot.actions[-1], [0.0, 0.0])


class SafeRobot(FakeRobot):
    def safe_action(self) -> np.ndarray:
        return np.array([0.5, -0.5], np.float32)


@pytest.mark.parametrize("where", ["observe", "policy"])
def test_an_interrupt_leaves_the_robot_on_its_safe_action(where, caplog):
    clock = FakeClock()
    robot = SafeRobot(clock)
    observe = robot.observe

    def observe_then_interrupt() -> dict[str, np.ndarray]:
        if where == "observe" and len(robot.observed_at) == 2:
            raise KeyboardInterrupt
        return observe()

    robot.observe = observe_then_interrupt  # type: ignore[method-assign]
    policy = Returning(
        {3: KeyboardInterrupt()} if where == "policy" else {}, default=lambda step: np.full(2, 0.1 * step, np.float32)
    )
    with pytest.raises(KeyboardInterrupt):
        run_loop(robot, policy, LoopConfig(rate_hz=100, steps=10), clock=clock, sleep=clock.sleep)
    np.testing.assert_allclose(robot.actions, [[0.1, 0.1], [0.2, 0.2], [0.5, -0.5]], rtol=1e-6)
    assert "applied the robot's safe action once" in caplog.text and "2 steps" in caplog.text


def test_a_robot_whose_apply_keeps_failing_raises_its_first_error(caplog):
    clock = FakeClock()
    robot = FakeRobot(clock)

    def always(step: int) -> None:
        raise OSError(f"bus error {step}")

    robot.on_apply = always
    with pytest.raises(OSError, match="bus error 1"):
        run_loop(robot, ScriptedPolicy(clock, cost_s=lambda step: 0.001), LoopConfig(rate_hz=100, steps=5),
                 clock=clock, sleep=clock.sleep)  # fmt: skip
    assert "applying the robot's safe action then failed too" in caplog.text and "bus error 2" in caplog.text


@pytest.mark.parametrize(
    ("observation", "reason"),
    [
        pytest.param({"state": np.zeros(3)}, "dtype float64", id="float64"),
        pytest.param({"state": np.zeros(4, np.float32)}, "shape", id="shape"),
        pytest.param({}, "missing 'state'", id="missing"),
        pytest.param({"state": [0.0, 0.0, 0.0]}, "is a list", id="list"),
    ],
)
def test_an_observation_off_the_spec_stops_the_loop_naming_the_problem(observation, reason):
    clock = FakeClock()
    robot = FakeRobot(clock)
    robot.observe = lambda: observation  # type: ignore[method-assign]
    with pytest.raises(RobotObservationError, match=re.escape(reason)):
        run_loop(robot, ScriptedPolicy(clock, cost_s=lambda step: 0.001), LoopConfig(rate_hz=100, steps=5),
                 clock=clock, sleep=clock.sleep)  # fmt: skip
    assert len(robot.applied) == 1  # only the safe action as it stopped


def test_a_non_finite_observation_misses_its_tick_and_the_loop_goes_on():
    clock = FakeClock()
    robot = FakeRobot(clock)
    observe = robot.observe

    def sometimes_nan() -> dict[str, np.ndarray]:
        obs = observe()
        if len(robot.observed_at) == 2:
            obs["state"][1] = np.nan
        return obs

    robot.observe = sometimes_nan  # type: ignore[method-assign]
    policy = Checking(default=lambda step: np.full(2, 0.1 * step, np.float32))
    stats = run_loop(robot, policy, LoopConfig(rate_hz=100, steps=4), clock=clock, sleep=clock.sleep)
    assert stats.misses == 1 and stats.hits == 3 and stats.steps == 4


def test_the_robot_gets_a_fresh_action_array_every_tick():
    clock = FakeClock()
    received: list[np.ndarray] = []

    class Scribbler(FakeRobot):
        def apply(self, action: np.ndarray) -> None:
            received.append(action.copy())
            action[:] = 99.0  # a robot that writes into its input must not change what the loop holds

    robot = Scribbler(clock)
    policy = Returning({2: RuntimeError("x"), 3: RuntimeError("y")}, default=lambda step: np.full(2, 0.5, np.float32))
    run_loop(robot, policy, LoopConfig(rate_hz=100, steps=4), clock=clock, sleep=clock.sleep)
    np.testing.assert_array_equal(np.array(received), np.full((4, 2), 0.5, np.float32))  # held, unscribbled


def test_a_persistent_spec_mismatch_is_logged_naming_the_field_then_rate_limited(caplog):
    caplog.set_level(logging.INFO, logger="agent_runtime")
    clock = FakeClock()
    robot = FakeRobot(clock)
    mismatch = SpecMismatchError(["action.high: the policy has [2.0, 2.0], the robot has [1.0, 1.0]"], context="x")
    policy = Returning({}, default=lambda step: mismatch)
    stats = run_loop(robot, policy, LoopConfig(rate_hz=100, steps=1500), clock=clock, sleep=clock.sleep)
    assert stats.miss_reasons == {"spec_mismatch": 1500}
    np.testing.assert_array_equal(robot.actions, np.zeros((1500, 2)))
    lines = [r for r in caplog.records if "action.high" in r.getMessage()]
    # 15 s of ticks: the first tick's line, and one more 10 s later.
    assert len(lines) == 2 and all(r.levelno == logging.ERROR for r in lines)
    assert lines[0].getMessage().startswith("the served policy's spec does not match the robot's; applying the hold")
    assert re.search(r"still does not match the robot's after \d+ ticks", lines[1].getMessage())
    assert len(caplog.records) == 2  # no generic miss warnings on top


def test_a_slow_served_policy_makes_the_loop_apply_its_fallback_on_time():
    backend = FakePolicy(state_spec())
    robot = FakeRobot()
    deadline_s = 0.012

    def slow_down(step: int) -> None:
        if step == 5:
            backend.delay_s = 0.1  # from the sixth request on, the policy takes 100 ms

    robot.on_apply = slow_down
    config = LoopConfig(rate_hz=50, deadline_ms=deadline_s * 1e3, fallback="hold", steps=12)
    with running_server(backend) as server, PolicyClient(ClientConfig(endpoint=server.endpoint), robot.spec) as client:
        client.connect()
        stats = run_loop(robot, client, config)
    for step, ((applied_at, _), observed_at) in enumerate(zip(robot.applied, robot.observed_at, strict=True)):
        assert applied_at - observed_at < deadline_s + SLACK_S, f"step {step} applied late"
    actions = robot.actions[:, 0]
    # Steps 5-11 all miss and hold the last policy action (an observation value 0.1 * k, so never 0).
    assert actions[4] > 0
    np.testing.assert_array_equal(actions[5:], actions[4])
    assert stats.misses >= 7 and stats.hits >= 1 and stats.hits + stats.misses == 12
    assert client.stats.errors["timeout"] >= 7


def test_loop_config_validation_names_the_field():
    with pytest.raises(ValueError, match="rate_hz is 0"):
        LoopConfig(rate_hz=0)
    with pytest.raises(ValueError, match=r"deadline_ms is 25; it must be positive and within the period \(20 ms"):
        LoopConfig(rate_hz=50, deadline_ms=25)
    with pytest.raises(ValueError, match="fallback is 'brake'"):
        LoopConfig(fallback="brake")  # type: ignore[arg-type]
    assert LoopConfig(rate_hz=50).deadline_s == pytest.approx(0.016)


def test_the_control_rate_is_the_policy_s_own_unless_given_and_a_different_one_is_warned_of(caplog):
    spec = state_spec()  # control period 0.01 s: trained at 100 Hz
    with caplog.at_level("WARNING", logger="agent_runtime.loop"):
        assert control_rate(spec, None) == pytest.approx(100.0)
        assert control_rate(spec, 100.0) == 100.0
        assert not caplog.records
        assert control_rate(spec, 50.0) == 50.0
    assert [r.getMessage() for r in caplog.records] == [
        "running at 50 Hz, but the policy was trained at 100 Hz (control period 0.01 s)"
    ]


def test_a_realtime_loop_gets_sched_fifo_and_gives_it_back(monkeypatch):
    import os

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: os.SCHED_OTHER)
    monkeypatch.setattr(os, "sched_getparam", lambda pid: os.sched_param(0))
    monkeypatch.setattr(
        os, "sched_setscheduler", lambda pid, policy, param: calls.append((policy, param.sched_priority))
    )
    clock = FakeClock()
    config = LoopConfig(rate_hz=100, steps=3, realtime_priority=40)
    stats = run_loop(
        FakeRobot(clock), ScriptedPolicy(clock, lambda step: 0.001), config, clock=clock, sleep=clock.sleep
    )
    assert stats.steps == 3 and calls == [(os.SCHED_FIFO, 40), (os.SCHED_OTHER, 0)]


def test_a_realtime_loop_without_the_capability_says_what_to_do(monkeypatch):
    import os

    def refuse(pid: int, policy: int, param: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    clock = FakeClock()
    config = LoopConfig(rate_hz=100, steps=3, realtime_priority=40)
    with pytest.raises(PermissionError, match="realtime_priority needs CAP_SYS_NICE"):
        run_loop(FakeRobot(clock), ScriptedPolicy(clock, lambda step: 0.001), config, clock=clock, sleep=clock.sleep)
    with pytest.raises(ValueError, match="SCHED_FIFO priorities are 1 to 99"):
        LoopConfig(realtime_priority=0)
