"""Episodes and resets in the control loop: the robot says when an episode ended, the loop resets it, times
the reset apart from the grid, and never carries an action across it; then a server killed under a loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack

import numpy as np

from agent_runtime.client import ClientConfig, DeadlineExceeded, PolicyClient
from agent_runtime.loop import LoopConfig, run_loop
from agent_runtime.spec import PolicySpec
from tests.agent_runtime.conftest import FakePolicy, running_server, state_obs, state_spec
from tests.agent_runtime.test_loop import FakeClock


class EpisodeRobot:
    """Episodes of ``length`` steps; each observation is ``value`` (FakePolicy answers with it)."""

    def __init__(self, length: int, value: float = 0.5, spec: PolicySpec | None = None) -> None:
        self._spec = spec or state_spec()
        self.length, self.value = length, value
        self.episode, self.step = -1, 0
        self.applied: list[tuple[int, int, np.ndarray]] = []  # (episode, step within it, action)
        self.reset_cost_s = 0.0
        self.clock: FakeClock | None = None
        self.on_apply: Callable[[int], None] = lambda count: None

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    def reset(self) -> None:
        self.episode, self.step = self.episode + 1, 0
        if self.clock is not None:
            self.clock.now += self.reset_cost_s

    def observe(self) -> dict[str, np.ndarray]:
        return state_obs(self.value)

    def apply(self, action: np.ndarray) -> bool:
        self.applied.append((self.episode, self.step, action.copy()))
        self.step += 1
        self.on_apply(len(self.applied))
        return self.step >= self.length

    def first_actions(self) -> dict[int, np.ndarray]:
        return {episode: action for episode, step, action in self.applied if step == 0}


class SafeRobot(EpisodeRobot):
    def safe_action(self) -> np.ndarray:
        return np.array([-0.25, 0.25], np.float32)


class Flaky:
    """Answers with the observation's value, except on the calls ``miss`` picks (a deadline passes)."""

    def __init__(self, clock: FakeClock, miss: Callable[[int], bool]) -> None:
        self.clock, self.miss, self.calls = clock, miss, 0

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> np.ndarray:
        self.calls += 1
        if self.miss(self.calls):
            self.clock.now = deadline
            raise DeadlineExceeded("no reply")
        self.clock.now += 0.001
        return np.full(2, observation["state"][0], dtype=np.float32)


def test_a_slow_reset_is_timed_apart_and_does_not_eat_the_next_ticks_budget():
    clock = FakeClock()
    robot = EpisodeRobot(length=5)
    robot.clock, robot.reset_cost_s = clock, 0.035  # three and a half periods at 100 Hz
    stats = run_loop(robot, Flaky(clock, lambda call: False), LoopConfig(rate_hz=100, steps=20),
                     clock=clock, sleep=clock.sleep)  # fmt: skip
    # Episodes end at steps 5, 10, 15 and 20: three resets; the run stops at 20 without a fourth.
    assert stats.steps == 20 and stats.resets == 3 and stats.overruns == 0 and stats.misses == 0
    assert stats.reset_time.summary_ms()["count"] == 4  # the first reset, and one between each two episodes
    assert stats.reset_time.summary_ms()["max_ms"] >= 35.0 - 1e-6
    assert stats.achieved_hz > 99.0  # the grid's rate: reset time is not control time


def test_hold_never_carries_an_action_into_a_new_episode():
    clock = FakeClock()
    robot = EpisodeRobot(length=4)
    # Calls 1-3 answer 0.5; from call 4 on every tick misses: episode 0's last step holds 0.5, and
    # episode 1 must start from zero, not from the held 0.5.
    stats = run_loop(robot, Flaky(clock, lambda call: call >= 4), LoopConfig(rate_hz=100, steps=12),
                     clock=clock, sleep=clock.sleep)  # fmt: skip
    actions = [(e, s, float(a[0])) for e, s, a in robot.applied]
    assert actions[:4] == [(0, 0, 0.5), (0, 1, 0.5), (0, 2, 0.5), (0, 3, 0.5)]
    assert all(value == 0.0 for episode, _, value in actions if episode >= 1)
    assert stats.resets == 2 and stats.misses == 9


def test_a_robot_names_its_own_safe_action_for_new_episodes():
    clock = FakeClock()
    robot = SafeRobot(length=3)
    run_loop(robot, Flaky(clock, lambda call: call >= 2), LoopConfig(rate_hz=100, steps=7),
             clock=clock, sleep=clock.sleep)  # fmt: skip
    firsts = robot.first_actions()
    np.testing.assert_array_equal(firsts[1], [-0.25, 0.25])
    np.testing.assert_array_equal(firsts[2], [-0.25, 0.25])


def test_a_robot_that_never_ends_an_episode_runs_one(peer_factory):
    class Endless(EpisodeRobot):
        def apply(self, action: np.ndarray) -> bool:
            super().apply(action)
            return False

    clock = FakeClock()
    robot = Endless(length=2)
    stats = run_loop(robot, Flaky(clock, lambda call: False), LoopConfig(rate_hz=100, steps=6),
                     clock=clock, sleep=clock.sleep)  # fmt: skip
    assert stats.resets == 0 and {e for e, _, _ in robot.applied} == {0}


def test_episodes_started_while_the_server_is_down_start_from_zero(tmp_path):
    """The field report: with the server killed under a running loop, every episode started during the
    outage began with the last episode's held action. Now each starts from zero, and the loop recovers."""
    endpoint = f"ipc://{tmp_path}/policy.sock"
    robot = EpisodeRobot(length=7)
    with ExitStack() as servers:
        servers.enter_context(running_server(FakePolicy(state_spec()), endpoint=endpoint))

        def outage(count: int) -> None:
            if count == 30:
                servers.close()  # the server goes away mid-episode
            elif count == 80:
                servers.enter_context(running_server(FakePolicy(state_spec()), endpoint=endpoint))

        robot.on_apply = outage
        with PolicyClient(ClientConfig(endpoint=endpoint, connect_timeout_s=5.0), robot.spec) as client:
            client.connect()
            stats = run_loop(robot, client, LoopConfig(rate_hz=100, steps=140, fallback="hold"))
    by_episode: dict[int, list[float]] = {}
    for episode, _, action in robot.applied:
        by_episode.setdefault(episode, []).append(float(action[0]))
    # Applies 1-30 are episodes 0-4 (30 = episode 4's third step); the server is back from apply 81.
    during = [e for e in by_episode if 5 <= e <= 10]  # started at applies 36, 43, ..., 71: all in the outage
    assert during and all(by_episode[e][0] == 0.0 for e in during), by_episode
    assert all(v == 0.0 for e in during for v in by_episode[e])  # nothing held across a reset
    assert by_episode[4][3:] == [0.5] * 4  # the episode running when the server went: its last action held
    assert any(v == 0.5 for e in by_episode if e >= 13 for v in by_episode[e])  # back once it was
    assert stats.resets == (len(robot.applied) - 1) // 7 and stats.misses > 0
