"""``agent-runtime evaluate`` on tiny exported policies: held-out seeds, statistics, replays, videos, bad input."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from pipeline.evaluate_policy import RESULT_NAME, EvaluateCommand
from tests.agent_runtime.conftest import build_onnx_policy
from train.envs import build_spec
from train.evaluate import eval_seeds

PRESET = "inverted_pendulum"


@pytest.fixture
def pushing_policy(tmp_path):
    """A state policy that pushes the cart hard: the pole falls within a few steps, differently per seed."""
    return build_onnx_policy(build_spec(PRESET, "state"), tmp_path / "policy.onnx", gain=3.0)


def test_evaluate_scores_held_out_episodes_and_replays_the_worst(pushing_policy, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--policy", str(pushing_policy), "--episodes", "6", "--worst-videos", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / RESULT_NAME).read_text())
    assert result["preset"] == PRESET and result["mode"] == "state"  # from the policy's own spec
    assert [e["seed"] for e in result["episodes"]] == eval_seeds(0, 6)  # the report card's held-out seeds
    stats = result["score"]["stats"]
    # Every episode fell (terminated) before the time limit: 6 failures of 6 under the task's criterion.
    assert all(e["terminated"] for e in result["episodes"]) and stats["failures"] == 6
    assert result["failure_criterion"] == "the episode terminated early (the pole fell)"
    assert stats["failure_ci"]["high"] == 1.0 and stats["failure_ci"]["low"] > 0.5
    assert stats["mean_ci"]["low"] <= stats["mean"] <= stats["mean_ci"]["high"]
    returns = sorted(e["return"] for e in result["episodes"])
    assert [w["ret"] for w in result["score"]["worst"]] == returns[:5]
    # The two worst episodes, replayed from their seeds, return the same and are on disk as mp4.
    assert len(result["videos"]) == 2
    for video in result["videos"]:
        assert video["replayed_return"] == video["return"]
        assert (out / f"worst{result['videos'].index(video) + 1}_seed{video['seed']}.mp4").stat().st_size > 0
    assert "| failures | 6 of 6 (100.0%" in printed and "worst episodes (seed: return)" in printed

    # --seeds replays one of them alone, with the same return.
    worst = result["score"]["worst"][0]
    again = tmp_path / "again"
    assert main(["evaluate", "--policy", str(pushing_policy), "--seeds", str(worst["seed"]), "--out", str(again)]) == 0
    replayed = json.loads((again / RESULT_NAME).read_text())["episodes"]
    assert [(e["seed"], e["return"]) for e in replayed] == [(worst["seed"], worst["ret"])]


def test_a_return_threshold_counts_failures_beside_the_tasks_own(pushing_policy, tmp_path):
    out = tmp_path / "eval"
    below = ["--failure-below", "-1"]  # no return is below -1: only the falls count
    assert main(["evaluate", "--policy", str(pushing_policy), "--episodes", "2", "--out", str(out), *below]) == 0
    result = json.loads((out / RESULT_NAME).read_text())
    assert result["failure_criterion"].endswith("or return below -1 (given)")
    assert result["score"]["stats"]["failures"] == 2


def test_bad_input_gets_a_clear_error_naming_the_problem(pushing_policy, tmp_path, capsys):
    assert main(["evaluate", "--policy", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o")]) == 1
    assert "no policy file at" in capsys.readouterr().err
    # A state policy in a preset whose state vector is another: the spec's differences are named.
    assert main(["evaluate", "--policy", str(pushing_policy), "--preset", "reacher", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not act in preset reacher" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="seconds is 0"):
        EvaluateCommand(policy=pushing_policy, seconds=0)
    with pytest.raises(ValueError, match="non-negative"):
        EvaluateCommand(policy=pushing_policy, seeds=(-1,))
