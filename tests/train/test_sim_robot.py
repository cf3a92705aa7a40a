"""The simulated robot over a task preset, alone and driven by a served ONNX policy through `agent-runtime robot`."""

from __future__ import annotations

import re
import socket

import numpy as np
import pytest

from agent_runtime.onnx_policy import OnnxPolicy
from pipeline.cli import RobotCommand, main
from tests.agent_runtime.conftest import build_onnx_policy, running_server
from train.envs import build_spec
from train.sim_robot import SimRobot

PRESET = "inverted_pendulum"


@pytest.mark.parametrize("mode", ["pixels", "state"])
def test_sim_robot_observes_exactly_its_spec_and_records_episode_returns(mode):
    with SimRobot(PRESET, mode, seed=0) as robot:
        assert robot.spec == build_spec(PRESET, mode)
        robot.reset()
        first = robot.observe()
        robot.spec.check_observation(first)
        if mode == "pixels":
            frame = first["pixels"][..., -3:]
            assert (frame.max(axis=-1) > 30).mean() > 0.02, "the camera frame is black"
        # Full force one way topples the pole within a few steps.
        steps = 0
        while not robot.episode_returns and steps < 200:
            robot.apply(np.array(robot.spec.action.high, dtype=np.float32))
            robot.spec.check_observation(robot.observe())
            steps += 1
        # InvertedPendulum-v5 pays 1 per step while the pole is up and 0 on the step it falls.
        assert robot.episode_returns == [float(steps - 1)]
        assert robot.episode_seeds == [0]
        assert robot.steps == steps


def test_every_episode_has_its_own_seed_and_replays_alone():
    push = np.array([0.5], dtype=np.float32)
    with SimRobot(PRESET, "state", seed=7) as robot:
        robot.reset()
        while len(robot.episode_returns) < 3:
            robot.apply(push)
        assert robot.episode_seeds == [7, 8, 9]
        returns = list(robot.episode_returns)
    with SimRobot(PRESET, "state", seed=9) as alone:  # episode 9 on its own, as `evaluate --seeds 9` runs it
        alone.reset()
        while not alone.episode_returns:
            alone.apply(push)
        assert alone.episode_returns == [returns[2]]


def test_observe_before_reset_says_so():
    with SimRobot(PRESET, "state") as robot, pytest.raises(RuntimeError, match="reset the robot first"):
        robot.observe()


@pytest.mark.parametrize("rate", ["default", "given"])
def test_robot_command_drives_the_sim_with_a_served_policy(rate, tmp_path, capsys, caplog):
    spec = build_spec(PRESET, "pixels")
    model = build_onnx_policy(spec, tmp_path / "policy.onnx")  # saturates: full force, episodes of a few steps
    hz = 1 / spec.control_period_s  # 25 Hz
    argv = ["robot", "--preset", PRESET, "--episodes", "2"] + (["--rate-hz", str(hz)] if rate == "given" else [])
    with running_server(OnnxPolicy(model)) as server, caplog.at_level("WARNING"):
        assert main([*argv, "--connect", str(server.endpoint)]) == 0
    served = server.stats.snapshot()  # read once the serving thread has stopped: it updates the counters
    out = capsys.readouterr().out
    returns = re.search(r"episode returns: ([\d.]+) \(seed 0\), ([\d.]+) \(seed 1\)", out)
    assert returns, out  # episode i resets with --seed + i, and says so
    assert all(float(r) >= 1 for r in returns.groups())
    achieved = re.search(r"loop: \d+ steps at ([\d.]+) Hz; misses \d+", out)
    assert achieved and float(achieved.group(1)) <= 1.05 * hz, out  # the policy's own rate when none is given
    assert not [r for r in caplog.records if "trained at" in r.getMessage()]
    assert served["requests"]["hello"] == 1 and served["requests"]["act"] >= 2


def test_robot_command_refuses_a_policy_for_another_task(tmp_path, capsys):
    model = build_onnx_policy(build_spec("reacher", "state"), tmp_path / "reacher.onnx")
    with running_server(OnnxPolicy(model)) as server:
        assert main(["robot", "--preset", PRESET, "--mode", "state", "--connect", str(server.endpoint)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "the robot's spec does not match the served policy's" in err
    assert "observations.state.shape: the policy has (10,), the robot has (4,)" in err


def test_robot_command_says_when_no_server_answers(capsys):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["robot", "--connect", f"tcp://127.0.0.1:{port}", "--connect-timeout-s", "0.5", "--mode", "state"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no policy server answered at tcp://127.0.0.1:{port} within 0.5 s")
    assert "is `agent-runtime serve` running there" in err


def test_robot_command_refuses_zero_episodes(capsys):
    with pytest.raises(ValueError, match="episodes is 0; it must be at least 1"):
        RobotCommand(episodes=0)


def test_robot_command_runs_a_policy_locally_without_a_server(tmp_path, capsys):
    model = build_onnx_policy(build_spec(PRESET, "state"), tmp_path / "policy.onnx")
    argv = ["robot", "--preset", PRESET, "--mode", "state", "--episodes", "2", "--model", str(model)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"episode returns: [\d.]+ \(seed 0\), [\d.]+ \(seed 1\)", out), out
    assert re.search(r"loop: \d+ steps at [\d.]+ Hz; misses 0 \(none\), overruns \d+, resets 1 \(", out), out
    assert f"policy: {model}, in this process (local control)" in out


def test_a_local_policy_for_another_task_is_refused_by_field(tmp_path, capsys):
    model = build_onnx_policy(build_spec("reacher", "state"), tmp_path / "reacher.onnx")
    assert main(["robot", "--preset", PRESET, "--mode", "state", "--model", str(model)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "observations.state.shape" in err


def test_robot_command_runs_a_chunked_policy_from_its_action_queue(tmp_path, capsys):
    spec = build_spec(PRESET, "state").with_chunk(8)
    model = build_onnx_policy(spec, tmp_path / "chunked.onnx")  # saturates: episodes of a few steps
    argv = ["robot", "--preset", PRESET, "--mode", "state", "--episodes", "2", "--chunk-merge", "blend"]
    with running_server(OnnxPolicy(model)) as server:
        assert main([*argv, "--connect", str(server.endpoint)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"episode returns: [\d.]+ \(seed 0\), [\d.]+ \(seed 1\)", out), out
    chunks = re.search(r"action chunks: (\d+) merged of (\d+) asked for, \d+ given up; (\d+) steps from the queue", out)
    assert chunks and int(chunks.group(1)) >= 2 and int(chunks.group(3)) >= 2, out  # one primed chunk an episode
