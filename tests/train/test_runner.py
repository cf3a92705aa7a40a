"""Runs end to end: the CLI entry point, checkpoints, resume after a kill, the rebuilt teacher."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.demo_report import training_line
from train.checkpoint import CheckpointError, load_checkpoint
from train.config import SACConfig, TrainConfig
from train.envs import make_env
from train.replay import stored_capacity
from train.run_files import CHECKPOINT_NAME
from train.runner import TrainingStopped, run
from train.teacher import policy_from_checkpoint

TINY = [
    "--steps", "240", "--learning-starts", "100", "--batch-size", "16", "--eval-every", "200",
    "--eval-episodes", "1", "--checkpoint-every", "120", "--sac.hidden", "32", "32",
]  # fmt: skip


def test_tiny_frozen_pixel_run_through_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", *TINY, "--encoder.input-size", "96", "--video-size", "64", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained frozen teacher on inverted_pendulum: 240 steps" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    # One update per step from step 100 (learning starts) through step 240: 141 updates.
    assert summary["steps"] == 240 and summary["updates"] == 141
    # The curve so far is readable during the run: one evaluation at 200, the final one at 240.
    evals = json.loads((run_dir / "evals.json").read_text())["evals"]
    assert [e[0] for e in evals] == [200, 240] and evals == summary["evals"]
    assert (run_dir / "eval.mp4").stat().st_size > 1000
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    payload = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)  # plain data, no pickle
    assert payload["format_version"] == 1 and payload["progress"]["step"] == 240
    assert payload["spec"]["provenance"]["encoder"] == "tf_efficientnet_lite0@96/stage2"
    assert (run_dir / "encoder.onnx").exists()  # the default: collection runs the encoder in onnxruntime


def test_teacher_from_checkpoint_acts_like_the_learner(tmp_path):
    cfg = TrainConfig(representation="state", steps=200, learning_starts=50, batch_size=16, eval_every=1000,
                      eval_episodes=1, video=False, run_dir=tmp_path / "r")  # fmt: skip
    run(cfg)
    policy, spec, saved = policy_from_checkpoint(tmp_path / "r" / CHECKPOINT_NAME)
    assert saved.steps == 200 and spec.provenance.policy == "sac-state"
    payload = load_checkpoint(tmp_path / "r" / CHECKPOINT_NAME)
    from train.teacher import build_learner

    learner = build_learner(saved, spec, None)
    learner.head.load_state_dict(payload["head"])
    learner.actor.load_state_dict(payload["actor"])
    env = make_env("inverted_pendulum", "state")
    obs, _ = env.reset(seed=5)
    env.close()
    spec.check_observation(obs)
    with torch.no_grad():
        action = policy({"state": torch.from_numpy(obs["state"][None])}).numpy()
    expected = learner.act(torch.from_numpy(obs["state"][None, None]), torch.zeros(1, 0), deterministic=True)
    np.testing.assert_allclose(action, learner.actor.scale(torch.from_numpy(expected)).numpy(), atol=1e-6)
    assert ((action >= -3.0) & (action <= 3.0)).all()


def test_run_refuses_to_overwrite_and_resume_needs_a_checkpoint(tmp_path):
    cfg = TrainConfig(representation="state", steps=60, learning_starts=50, batch_size=8, eval_episodes=1,
                      video=False, run_dir=tmp_path / "r")  # fmt: skip
    run(cfg)
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        run(cfg)
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        run(TrainConfig(resume=True, run_dir=tmp_path / "empty"))


def test_a_finished_run_resumed_with_more_steps_grows_its_replay_and_goes_on(tmp_path):
    cfg = TrainConfig(representation="state", steps=60, learning_starts=50, batch_size=8, eval_episodes=1,
                      eval_every=100_000, video=False, run_dir=tmp_path / "r")  # fmt: skip
    run(cfg)
    with pytest.raises(ValueError, match="finished its 60 steps; give a larger --steps"):
        run(dataclasses.replace(cfg, steps=None, resume=True))
    first = load_checkpoint(tmp_path / "r" / CHECKPOINT_NAME)
    capacity = first["replay_capacity_per_lane"]
    assert capacity == 2 * 60 + 2
    # Twice the steps: the replay grows to hold them all, as a 120-step run's would.
    summary = run(dataclasses.replace(cfg, steps=120, resume=True))
    assert summary["steps"] == 120 and summary["resumed_at_step"] == 60
    payload = load_checkpoint(tmp_path / "r" / CHECKPOINT_NAME)
    assert payload["replay_capacity_per_lane"] == stored_capacity(tmp_path / "r" / "replay") == 2 * 120 + 2
    # Again from an older checkpoint without the saved capacity: the files say it.
    del payload["replay_capacity_per_lane"]
    torch.save(payload, tmp_path / "r" / CHECKPOINT_NAME)
    assert run(dataclasses.replace(cfg, steps=150, resume=True))["steps"] == 150
    assert stored_capacity(tmp_path / "r" / "replay") == 2 * 150 + 2
    # A replay capped by --replay-capacity stays capped when the run goes on.
    capped = dataclasses.replace(cfg, replay_capacity=50, run_dir=tmp_path / "capped")
    run(capped)
    run(dataclasses.replace(capped, steps=120, resume=True))
    assert stored_capacity(tmp_path / "capped" / "replay") == 50 + 2


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "latest.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(bad)
    torch.save({"kind": "something else"}, bad)
    with pytest.raises(CheckpointError, match="not an agent-runtime teacher checkpoint"):
        load_checkpoint(bad)


def _training_until_checkpoint(run_dir: Path, target: int, at_least: int, num_envs: int = 1) -> subprocess.Popen[str]:
    """Start `agent-runtime train` (state SAC, tiny) in a child process, in a process group of its own
    as a terminal would; return it once a checkpoint at step ``at_least`` or later exists."""
    args = ["train", "--representation", "state", "--steps", str(target), "--learning-starts", "50",
            "--batch-size", "8", "--sac.hidden", "16", "16", "--checkpoint-every", "100", "--eval-every", "100000",
            "--eval-episodes", "1", "--no-video", "--num-envs", str(num_envs), "--run-dir", str(run_dir)]  # fmt: skip
    code = "import sys; from pipeline.cli import console_main; console_main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    checkpoint = run_dir / CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if checkpoint.exists():
            try:
                if load_checkpoint(checkpoint)["progress"]["step"] >= at_least:
                    return proc
            except CheckpointError:
                pass  # cannot happen with atomic writes, but never wait on a half file
        if proc.poll() is not None:
            pytest.fail(f"training exited early with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    pytest.fail(f"no checkpoint at step {at_least} within 120 s")


def test_resume_after_a_kill_continues_the_step_count(tmp_path):
    run_dir = tmp_path / "killed"
    target = 1500  # killed on its way there; the resumed run finishes the saved target
    proc = _training_until_checkpoint(run_dir, target, at_least=200)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    checkpoint = run_dir / CHECKPOINT_NAME
    killed_at = load_checkpoint(checkpoint)["progress"]["step"]
    assert 200 <= killed_at < target
    with pytest.raises(ValueError, match=f"at step {killed_at:,} already; --steps 10 is below it"):
        run(TrainConfig(resume=True, steps=10, run_dir=run_dir))
    summary = run(TrainConfig(resume=True, run_dir=run_dir))  # no --steps: the run's own target
    assert summary["steps"] == target
    assert summary["resumed_at_step"] == killed_at  # its wall time and speed cover the resumed part only
    resumed = f"{target:,} steps ({target - killed_at:,} after resuming at {killed_at:,})"
    assert training_line(summary).startswith(resumed)
    assert summary["evals"][-1][0] == target
    payload = load_checkpoint(checkpoint)
    assert payload["progress"]["step"] == target
    assert payload["progress"]["updates"] == target - 50 + 1  # one per step from step 50, none lost or repeated
    assert Path(summary["checkpoint"]).exists()


@pytest.mark.parametrize(
    ("signum", "num_envs", "whole_group"),
    [(signal.SIGINT, 2, True), (signal.SIGTERM, 1, False), (signal.SIGTERM, 2, True)],
    ids=["ctrl-c-in-a-terminal-with-env-workers", "sigterm-to-the-process", "sigterm-to-the-job-with-env-workers"],
)
def test_a_signal_stops_training_with_a_checkpoint_at_the_step_it_reached(tmp_path, signum, num_envs, whole_group):
    run_dir = tmp_path / "stopped"
    proc = _training_until_checkpoint(run_dir, 1500, at_least=200, num_envs=num_envs)
    # A terminal's Ctrl-C reaches every process of the group, environment workers included.
    os.killpg(proc.pid, signum) if whole_group else proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    stopped_at = load_checkpoint(run_dir / CHECKPOINT_NAME)["progress"]["step"]
    assert stopped_at >= 200
    assert f"stopped at step {stopped_at:,}, checkpoint saved; continue with the same command and --resume" in err
    assert "Traceback" not in err
    summary = run(TrainConfig(resume=True, steps=1500, run_dir=run_dir))
    assert summary["resumed_at_step"] == stopped_at and summary["steps"] == 1500


def test_a_run_saved_before_the_feature_shift_existed_resumes_without_it(tmp_path):
    cfg = TrainConfig(representation="state", steps=60, learning_starts=50, batch_size=8, eval_every=10**6,
                      eval_episodes=1, video=False, run_dir=tmp_path / "old")  # fmt: skip
    run(cfg)
    path = cfg.run_dir / CHECKPOINT_NAME
    payload = load_checkpoint(path)
    del payload["config"]["sac"]["feature_shift"]  # as written before the option existed
    torch.save(payload, path)
    run(dataclasses.replace(cfg, steps=70, resume=True))
    assert json.loads((cfg.run_dir / "config.json").read_text())["sac"]["feature_shift"] == 0


def test_a_stop_request_saves_where_the_run_is_and_resume_goes_on(tmp_path):
    cfg = TrainConfig(representation="state", steps=300, learning_starts=50, batch_size=16, eval_every=10**6,
                      eval_episodes=1, video=False, checkpoint_every=10**6, run_dir=tmp_path / "r")  # fmt: skip
    stop = threading.Event()
    stop.set()  # asked before the first step: the run stops after it
    with pytest.raises(TrainingStopped) as stopped:
        run(cfg, stop=stop)
    assert stopped.value.step == 1
    assert load_checkpoint(cfg.run_dir / CHECKPOINT_NAME)["progress"]["step"] == 1
    assert not (cfg.run_dir / "summary.json").exists()  # not finished, so no summary
    summary = run(dataclasses.replace(cfg, steps=200, resume=True))  # a new target, short of the saved 300
    assert summary["resumed_at_step"] == 1 and summary["steps"] == 200
    assert load_checkpoint(cfg.run_dir / CHECKPOINT_NAME)["config"]["steps"] == 200


def test_a_stop_during_the_final_evaluation_keeps_every_step_and_resume_evaluates_again(tmp_path, monkeypatch):
    import train.runner as runner

    cfg = TrainConfig(representation="state", steps=120, learning_starts=50, batch_size=16, eval_every=10**6,
                      eval_episodes=1, final_eval_episodes=3, video=False, checkpoint_every=10**6,
                      run_dir=tmp_path / "r")  # fmt: skip
    stop = threading.Event()
    real_evaluate = runner.evaluate

    def asked_to_stop_during_it(*args: Any, **kwargs: Any) -> Any:
        stop.set()  # Ctrl-C arrives as the final evaluation begins
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", asked_to_stop_during_it)
    with pytest.raises(TrainingStopped) as stopped:
        run(cfg, stop=stop)
    assert stopped.value.step == 120
    assert load_checkpoint(cfg.run_dir / CHECKPOINT_NAME)["progress"]["step"] == 120  # no step lost
    assert not (cfg.run_dir / "summary.json").exists()
    monkeypatch.setattr(runner, "evaluate", real_evaluate)
    summary = run(dataclasses.replace(cfg, resume=True))
    assert summary["steps"] == 120 and summary["resumed_at_step"] == 120
    assert [step for step, *_ in summary["evals"]] == [120]  # the cut-short evaluation left no point
    assert len(summary["final_eval"]["returns"]) == 3


def test_a_run_killed_after_its_final_checkpoint_evaluates_again_with_one_point_at_the_end(tmp_path):
    cfg = TrainConfig(representation="state", steps=60, learning_starts=50, batch_size=8, eval_every=10**6,
                      eval_episodes=1, final_eval_episodes=1, video=False, run_dir=tmp_path / "r")  # fmt: skip
    run(cfg)
    (cfg.run_dir / "summary.json").unlink()  # as if killed between the last checkpoint and the summary
    summary = run(dataclasses.replace(cfg, resume=True))
    assert [step for step, *_ in summary["evals"]] == [60]


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_stop_at_a_periodic_evaluation_saves_there_and_resume_evaluates_at_that_step(tmp_path, monkeypatch, when):
    import train.runner as runner

    cfg = TrainConfig(representation="state", steps=130, learning_starts=50, batch_size=16, eval_every=60,
                      eval_episodes=2, final_eval_episodes=2, video=False, checkpoint_every=10**6,
                      run_dir=tmp_path / "r")  # fmt: skip
    stop = threading.Event()
    real_evaluate = runner.evaluate
    calls: list[int] = []

    def asked_to_stop_during_it(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the evaluation at step 120 (the first is at 60)
            stop.set()  # Ctrl-C arrives as it begins: no episode of it starts
        return real_evaluate(*args, **kwargs)

    real_update = runner.Learner.update
    updates: list[int] = []

    def asked_to_stop_before_it(self: Any, batch: Any) -> Any:
        updates.append(1)
        if len(updates) == 120 - 49:  # step 120's update (one a step from step 50): before its evaluation
            stop.set()
        return real_update(self, batch)

    if when == "during":
        monkeypatch.setattr(runner, "evaluate", asked_to_stop_during_it)
    else:
        monkeypatch.setattr(runner.Learner, "update", asked_to_stop_before_it)
    with pytest.raises(TrainingStopped) as stopped:
        run(cfg, stop=stop)
    assert stopped.value.step == 120
    assert load_checkpoint(cfg.run_dir / CHECKPOINT_NAME)["progress"]["step"] == 120
    evals = json.loads((cfg.run_dir / "evals.json").read_text())["evals"]
    assert [step for step, *_ in evals] == [60]  # the cut-short evaluation left no point
    monkeypatch.undo()
    summary = run(dataclasses.replace(cfg, resume=True))
    assert summary["resumed_at_step"] == 120
    assert [step for step, *_ in summary["evals"]] == [60, 120, 130]  # each point once, 120 at its step
    assert summary["learning_steps_per_s"] > 0  # the evaluation run first is not taken from the updates' time


def test_a_stop_that_comes_as_an_evaluation_ends_keeps_it(tmp_path, monkeypatch):
    import train.runner as runner

    cfg = TrainConfig(representation="state", steps=130, learning_starts=50, batch_size=16, eval_every=60,
                      eval_episodes=2, final_eval_episodes=2, video=False, checkpoint_every=10**6,
                      run_dir=tmp_path / "r")  # fmt: skip
    stop = threading.Event()
    real_evaluate = runner.evaluate

    def asked_to_stop_in_its_last_episode(*args: Any, **kwargs: Any) -> Any:
        result = real_evaluate(*args, **kwargs)
        stop.set()  # every episode has run: nothing is cut short
        return result

    monkeypatch.setattr(runner, "evaluate", asked_to_stop_in_its_last_episode)
    with pytest.raises(TrainingStopped) as stopped:
        run(cfg, stop=stop)
    assert stopped.value.step == 61  # the run stops at the end of the next step, as for any stop
    assert [step for step, *_ in json.loads((cfg.run_dir / "evals.json").read_text())["evals"]] == [60]


def test_a_resumed_run_reads_its_own_preset_copy_and_names_the_settings_it_keeps(tmp_path, caplog):
    import logging
    import shutil

    task = tmp_path / "task.toml"
    shutil.copy(Path(__file__).resolve().parents[2] / "docs" / "presets" / "inverted_double_pendulum.toml", task)
    cfg = TrainConfig(preset=str(task), representation="state", steps=60, learning_starts=50, batch_size=8,
                      eval_every=10**6, eval_episodes=1, final_eval_episodes=1, video=False,
                      run_dir=tmp_path / "r")  # fmt: skip
    run(cfg)
    task.unlink()  # moved, edited or deleted since: the run has its own copy
    with caplog.at_level(logging.WARNING, logger="train.runner"):
        summary = run(dataclasses.replace(cfg, steps=70, resume=True, eval_episodes=2))
    assert summary["steps"] == 70 and summary["resumed_at_step"] == 60
    assert "this command's differ and are not used: eval_episodes 2 (keeps 1)" in caplog.text


def test_replay_holds_exactly_what_the_environment_did(tmp_path):
    # Re-simulate the run from its seed with the actions the replay stored: every next observation,
    # reward and termination must match, episode boundaries included.
    import gymnasium as gym

    from train.replay import Replay, ReplayLayout

    cfg = TrainConfig(representation="state", steps=300, learning_starts=10**6, eval_every=10**6, eval_episodes=1,
                      video=False, run_dir=tmp_path / "r")  # fmt: skip
    run(cfg)
    layout = ReplayLayout(1, 602, (4,), "float32", 0, 1, 1)  # the run's: 2 * 300 + 2 slots
    arrays = Replay(layout, 1, 0.99, tmp_path / "r" / "replay", resume=True)._arrays
    env = gym.make("InvertedPendulum-v5")
    obs, _ = env.reset(seed=cfg.seed)
    np.testing.assert_allclose(arrays["frame"][0, 0], obs, atol=1e-6)  # stored as float32
    checked = 0
    for t in range(300):
        assert arrays["slot_step"][0, t] == t
        if not arrays["has_action"][0, t]:  # the final observation of an episode: the env reset here
            obs, _ = env.reset()
            np.testing.assert_allclose(arrays["frame"][0, t + 1], obs, atol=1e-6)
            continue
        stored = arrays["action"][0, t]  # in [-1, 1]; scaled to the bounds +-3 as the runner does
        low, high = np.float32(-3.0), np.float32(3.0)
        obs, reward, terminated, _, _ = env.step((low + 0.5 * (stored + 1.0) * (high - low)).astype(np.float32))
        np.testing.assert_allclose(arrays["frame"][0, t + 1], obs, atol=1e-6)
        assert arrays["reward"][0, t] == reward and arrays["terminated"][0, t] == terminated
        checked += 1
    env.close()
    assert checked > 250


def test_tiny_run_fine_tuning_the_last_stage_gives_a_teacher_with_the_tuned_stage(tmp_path):
    from models.config import EncoderConfig
    from models.last_stage import split_last_stage

    encoder = EncoderConfig(output="spatial", stage=2, input_size=96)  # >= the frame: ONNX-exportable resize
    cfg = TrainConfig(encoder=encoder, finetune_last_stage=True, steps=150, learning_starts=100, batch_size=8,
                      eval_every=1000, eval_episodes=1, video=False, run_dir=tmp_path / "r",
                      sac=SACConfig(hidden=(16, 16)))  # fmt: skip
    run(cfg)
    policy, spec, _ = policy_from_checkpoint(tmp_path / "r" / CHECKPOINT_NAME)
    assert spec.provenance.encoder == "tf_efficientnet_lite0@96/stage2+finetuned"
    assert policy.encoder is not None and policy.encoder.config.stage == 1
    tuned = policy.head.last_stage
    assert tuned is not None
    _, pretrained = split_last_stage(encoder)
    moved = [not torch.equal(a, b) for a, b in zip(tuned.parameters(), pretrained.parameters(), strict=True)]
    assert any(moved), "50 updates left the last stage at its pretrained weights"
    env = make_env("inverted_pendulum", "pixels")
    obs, _ = env.reset(seed=0)
    env.close()
    with torch.no_grad():
        action = policy({k: torch.from_numpy(v)[None] for k, v in obs.items()})
    assert action.shape == (1, 1) and bool((action.abs() <= 3.0).all())


def test_without_a_terminal_progress_goes_to_the_log(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("train.runner.PROGRESS_LOG_S", 0.0)  # a line after every step
    cfg = TrainConfig(representation="state", steps=60, learning_starts=50, batch_size=8, eval_episodes=1,
                      video=False, run_dir=tmp_path / "r")  # fmt: skip
    with caplog.at_level("INFO", logger="train.runner"):
        run(cfg)  # pytest captures stderr: no terminal, so the bar is off
    lines = [r.getMessage() for r in caplog.records if " of 60 (" in r.getMessage()]
    assert lines and lines[-1].startswith("step 60 of 60 (100%)") and "steps/s" in lines[-1]
    assert lines[0].endswith("last evaluation return none yet")  # no evaluation has run before the end


def test_collecting_ahead_repeats_with_the_seed_and_keeps_replay_and_step_count_together(tmp_path):
    cfg = TrainConfig(representation="state", steps=300, learning_starts=100, batch_size=16, eval_every=150,
                      eval_episodes=1, checkpoint_every=200, video=False, collect_ahead=True,
                      sac=SACConfig(hidden=(32, 32)))  # fmt: skip
    runs = [run(dataclasses.replace(cfg, run_dir=tmp_path / name)) for name in ("a", "b")]
    assert runs[0]["evals"] == runs[1]["evals"]
    for key in ("seeds", "returns", "terminated"):  # the final evaluation's wall time differs, its episodes do not
        assert runs[0]["final_eval"][key] == runs[1]["final_eval"][key]
    assert runs[0]["updates"] == 201 and runs[0]["steps"] == 300
    payload = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    heads = payload["replay"]["heads"][0]
    # The replay holds the first observation, one slot per counted step and one per new episode: no
    # step collected ahead is in it beyond the step count.
    assert heads == 1 + 300 + payload["progress"]["episodes"]
