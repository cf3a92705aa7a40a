"""DeepMind Control Suite presets: declared shapes, lit and moving frames, both env kinds in one
process, and a DMC task through train, distill, export and a served robot loop."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from agent_runtime.onnx_policy import OnnxPolicy
from distill.config import DistillConfig
from distill.runner import run as distill
from models.config import EncoderConfig
from pipeline.cli import main
from tests.agent_runtime.conftest import running_server
from train.config import SACConfig, TrainConfig
from train.envs import build_spec, make_env
from train.presets import PRESETS
from train.runner import run as train

DMC = sorted(name for name in PRESETS if name.startswith("dmc_"))
STEPS = 30


def test_the_issue_asks_for_six_tasks():
    assert DMC == ["dmc_cartpole_swingup", "dmc_cheetah_run", "dmc_cup_catch", "dmc_finger_spin",
                   "dmc_reacher_easy", "dmc_walker_walk"]  # fmt: skip


@pytest.mark.parametrize("name", DMC)
def test_a_dmc_preset_observes_its_spec_with_lit_frames_that_change(name):
    preset = PRESETS[name]
    assert preset.action_repeat == 2 and preset.frame_stack == 3 and preset.image_size == 84
    for mode in ("pixels", "state"):
        spec = build_spec(preset, mode)
        env = make_env(preset, mode)
        try:
            obs, _ = env.reset(seed=0)
            spec.check_observation(obs)
            first = obs["pixels"][..., -3:].copy() if mode == "pixels" else None
            env.action_space.seed(0)
            for _ in range(STEPS):
                obs, reward, terminated, _, _ = env.step(env.action_space.sample())
                spec.check_observation(obs)
                assert np.isfinite(float(reward)) and not terminated  # the suite's tasks end by time only
                assert all(np.isfinite(v).all() for v in obs.values() if v.dtype.kind == "f")
            if first is not None:
                frame = obs["pixels"][..., -3:]
                assert (frame.max(axis=-1) > 40).mean() > 0.2, "the frame is dark"
                assert not np.array_equal(frame, first), "the frame did not change over 30 random steps"
        finally:
            env.close()
    # The robot's own joints only: what the task is about (pole, target, torso, body, ball) is seen.
    proprio = build_spec(preset, "pixels").observation("proprio").quantities
    assert proprio and not any(q.name.startswith(("root", "hinge", "ball_")) for q in proprio)


def test_the_same_seed_gives_the_same_episode():
    runs = []
    for _ in range(2):
        env = make_env("dmc_finger_spin", "state")
        obs, _ = env.reset(seed=5)
        env.action_space.seed(5)
        states = [obs["state"]] + [env.step(env.action_space.sample())[0]["state"] for _ in range(5)]
        env.close()
        runs.append(np.stack(states))
    assert np.array_equal(runs[0], runs[1])
    other = make_env("dmc_finger_spin", "state")
    assert not np.array_equal(other.reset(seed=6)[0]["state"], runs[0][0])
    other.close()


def test_a_gymnasium_and_a_dmc_env_render_their_own_frames_in_one_process():
    gym_env, dmc_env = make_env("inverted_pendulum", "pixels"), make_env("dmc_cartpole_swingup", "pixels")
    try:
        a, _ = gym_env.reset(seed=0)
        b, _ = dmc_env.reset(seed=0)
        for _ in range(3):
            a = gym_env.step(gym_env.action_space.sample())[0]
            b = dmc_env.step(dmc_env.action_space.sample())[0]
        again = make_env("inverted_pendulum", "pixels")
        c, _ = again.reset(seed=0)
        for _ in range(3):
            c = again.step(np.zeros(1, np.float32))[0]
        again.close()
        for obs in (a, b, c):
            assert obs["pixels"].max() > 0
        assert not np.array_equal(a["pixels"], b["pixels"])  # each from its own model and camera
    finally:
        gym_env.close()
        dmc_env.close()


def test_a_dmc_task_trains_distils_exports_and_drives_a_served_robot(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    encoder = EncoderConfig(weights="none", input_size=84, output="spatial", stage=0)
    train(TrainConfig(preset="dmc_cartpole_swingup", encoder=encoder, encoder_runtime="torch", steps=40,
                      learning_starts=20, batch_size=8, eval_every=10**6, eval_episodes=1,
                      final_eval_episodes=1, video_size=64, sac=SACConfig(hidden=(16, 16), latent_dim=16),
                      run_dir=teacher))  # fmt: skip
    # The videos (train's and distill's, both on by default) render dm_control's physics, not a gymnasium model.
    assert (teacher / "eval.mp4").stat().st_size > 0
    student = tmp_path / "student"
    card = distill(DistillConfig(teacher=teacher, run_dir=student, iterations=1, steps_per_iteration=32,
                                 updates_per_iteration=2, batch_size=8, eval_episodes=1, latency_calls=5,
                                 hidden=(16, 16), channels=8, baseline=False, failure_iterations=0,
                                 check_episodes=1))  # fmt: skip
    assert (student / "student.mp4").stat().st_size > 0
    assert card["preset"] == "dmc_cartpole_swingup" and card["failure_criterion"]
    # 500 policy steps per episode (1,000 simulator steps, each action held for 2).
    assert json.loads((student / "report.json").read_text())["teacher"]["stats"]["episodes"] == 1

    policy = OnnxPolicy(student / "policy.onnx")
    assert policy.spec.provenance.env_id == "dm_control/cartpole-swingup-v0"
    with running_server(policy) as server:
        argv = ["robot", "--preset", "dmc_cartpole_swingup", "--connect", str(server.endpoint), "--episodes", "1",
                "--rate-hz", "250", "--seconds", "10"]  # fmt: skip
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"episode returns: [\d.]+ \(seed 0\)", out), out
