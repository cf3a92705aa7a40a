"""DAgger: who drives, what gets labelled, and that only the student learns."""

from __future__ import annotations

import numpy as np
import torch

from distill.actors import torch_actor
from distill.config import DistillConfig
from distill.dagger import collect, train_student
from distill.dataset import Dataset
from distill.run_policy import load_run_policy
from distill.student_checkpoint import build_student
from train.envs import build_spec, make_env

STATE_SPEC = build_spec("inverted_pendulum", "state")
BOUNDS = (np.array([-3.0], np.float32), np.array([3.0], np.float32))


def _constant(value: float):
    return lambda observation: np.array([value], np.float32)


def test_beta_decides_who_drives_and_the_teacher_labels_every_step():
    env = make_env("inverted_pendulum", "state")
    try:
        applied = []
        original_step = env.step

        def step(action):
            applied.append(float(action[0]))
            return original_step(action)

        env.step = step  # type: ignore[method-assign]
        rng = np.random.default_rng(0)
        got = collect(env, _constant(-1.5), _constant(1.5), 0.5, 200, ("state",), BOUNDS, rng, first_seed=3)
    finally:
        env.close()
    assert got.observations["state"].shape == (200, 4) and got.labels.shape == (200, 1)
    # Labels are the teacher's action in [-1, 1] (1.5 of +-3 is 0.5), on every step, whoever drove.
    np.testing.assert_allclose(got.labels, 0.5)
    assert applied.count(1.5) == got.teacher_steps and applied.count(-1.5) == 200 - got.teacher_steps
    assert 70 < got.teacher_steps < 130  # beta 0.5 over 200 steps
    assert got.episode_returns  # constant pushes topple the pole: episodes end and restart


def test_beta_one_is_behaviour_cloning_and_zero_lets_the_student_drive_alone():
    env = make_env("inverted_pendulum", "state")
    try:
        rng = np.random.default_rng(1)
        teacher_only = collect(env, _constant(-1.0), _constant(1.0), 1.0, 50, ("state",), BOUNDS, rng, 0)
        student_only = collect(env, _constant(-1.0), _constant(1.0), 0.0, 50, ("state",), BOUNDS, rng, 0)
    finally:
        env.close()
    assert teacher_only.teacher_steps == 50 and student_only.teacher_steps == 0


def test_the_student_learns_and_the_teacher_stays_frozen_in_eval_mode(tmp_path, state_run):
    teacher = load_run_policy(state_run)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    cfg = DistillConfig(student="mlp", hidden=(32, 32), run_dir=tmp_path / "s", teacher=state_run)
    torch.manual_seed(0)
    student = build_student(cfg, STATE_SPEC)
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    dataset = Dataset(tmp_path / "data", STATE_SPEC, capacity=200)
    env = make_env("inverted_pendulum", "state")
    try:
        rng = np.random.default_rng(0)
        got = collect(env, torch_actor(student), torch_actor(teacher.module), 0.5, 200, ("state",), BOUNDS, rng, 0)
    finally:
        env.close()
    dataset.append(got.observations, got.labels)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    metrics = train_student(student, optimizer, dataset, updates=60, batch_size=32, rng=np.random.default_rng(0))
    assert metrics["loss/imitation_last"] < metrics["loss/imitation_first"]
    learned = {k: v for k, v in student.state_dict().items() if k not in ("low", "high")}
    assert all(not torch.equal(student_before[k], v) for k, v in learned.items())
    assert all(torch.equal(before[k], v) for k, v in teacher.module.state_dict().items())
    assert not teacher.module.training and not any(m.training for m in teacher.module.modules())
    assert not any(p.grad is not None for p in teacher.module.parameters())


def test_the_dagger_collector_drives_with_the_student_weights_it_is_sent():
    from distill.collector import LocalDaggerCollector, student_weights

    cfg = DistillConfig(student="mlp", hidden=(8,))
    torch.manual_seed(0)
    trained, copy = build_student(cfg, STATE_SPEC), build_student(cfg, STATE_SPEC)
    env = make_env("inverted_pendulum", "state")
    collector = LocalDaggerCollector(env, copy, _constant(0.0), ("state",), BOUNDS, seed=0)
    try:
        first = collector.collect(student_weights(trained), 0.0, 30, first_seed=7)
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(torch.randn_like(p))
        again = collector.collect(student_weights(trained), 0.0, 30, first_seed=7)
        same = collector.collect(student_weights(trained), 0.0, 30, first_seed=7)
    finally:
        collector.close()
    assert first.teacher_steps == again.teacher_steps == 0  # beta 0: the student drove every step
    # New weights drive the pendulum elsewhere; the same weights and seed drive it the same way.
    assert not np.allclose(first.observations["state"], again.observations["state"])
    np.testing.assert_array_equal(again.observations["state"], same.observations["state"])
    assert copy is collector.student and all(
        torch.equal(a, b) for a, b in zip(copy.state_dict().values(), trained.state_dict().values(), strict=True)
    )


def test_chunk_labels_follow_each_rows_own_episode_and_mask_what_lies_past_it():
    from distill.dagger import chunk_labels

    labels = np.arange(6, dtype=np.float32)[:, None]  # rows 0-2: episode 0, rows 3-5: episode 1
    episodes = np.array([0, 0, 0, 1, 1, 1])
    chunks, mask = chunk_labels(labels, episodes, 3)
    assert chunks[:, :, 0].tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 5], [4, 5, 5], [5, 5, 5]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
