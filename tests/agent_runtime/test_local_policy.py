"""Local control: an exported policy in the robot host's own process, driven by the same loop."""

from __future__ import annotations

import numpy as np
import pytest

from agent_runtime.local_policy import LocalPolicy
from agent_runtime.loop import LoopConfig, run_loop
from agent_runtime.spec import SpecMismatchError
from tests.agent_runtime.conftest import build_onnx_policy, state_obs, state_spec
from tests.agent_runtime.test_resets import EpisodeRobot


def test_the_loop_drives_a_robot_with_a_local_policy(tmp_path):
    policy = LocalPolicy(build_onnx_policy(state_spec(), tmp_path / "p.onnx"), state_spec())
    robot = EpisodeRobot(length=10)
    stats = run_loop(robot, policy, LoopConfig(rate_hz=200, steps=40))
    assert stats.steps == 40 and stats.resets == 3  # not after the last tick
    expected = policy.policy.infer({"state": state_obs(0.5)["state"][None]})[0]
    np.testing.assert_allclose(robot.applied[-1][2], expected)


def test_a_local_policy_checks_the_robots_spec_and_every_observation(tmp_path):
    path = build_onnx_policy(state_spec(dim=4), tmp_path / "p.onnx")
    with pytest.raises(SpecMismatchError, match="does not match"):
        LocalPolicy(path, state_spec(dim=3))
    policy = LocalPolicy(path, state_spec(dim=4))
    with pytest.raises(ValueError, match="state"):
        policy.act({"state": np.zeros(3, np.float32)}, deadline=0.0)
