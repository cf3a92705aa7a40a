"""The distill stage end to end on tiny budgets, and its bad inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from agent_runtime.spec import SpecMismatchError, spec_from_onnx_metadata
from distill.config import DistillConfig
from distill.dagger import collect
from distill.export import run_export
from distill.export_config import ExportConfig
from distill.failure_check import FailureCheck, FailureChecker
from distill.runner import REPORT_NAME, run
from distill.student_checkpoint import STUDENT_CHECKPOINT, load_student
from pipeline.evaluate_policy import EvaluateCommand, run_evaluate
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.envs import make_env
from train.run_files import CHECKPOINT_NAME

TINY = DistillConfig(iterations=2, steps_per_iteration=64, updates_per_iteration=5, batch_size=16, eval_episodes=3,
                     latency_calls=10, hidden=(16, 16), channels=8, video=False, failure_iterations=1,
                     check_episodes=3)  # fmt: skip


def tiny(teacher: Path, run_dir: Path, **changes: Any) -> DistillConfig:
    return dataclasses.replace(TINY, teacher=teacher, run_dir=run_dir, **changes)


def test_privileged_state_teacher_distils_into_a_pixel_student(tmp_path, state_run):
    cfg = tiny(state_run, tmp_path / "student", student="conv")
    report = run(cfg)
    card = json.loads((cfg.run_dir / REPORT_NAME).read_text())
    assert card == json.loads(json.dumps(report))
    assert set(card["students"]) == {"dagger", "bc"}
    assert card["teacher_policy"] == "sac-state" and card["student_policy"] == "student-conv"
    # Every policy ran the same 3 held-out seeds, scored with the report's statistics.
    assert len(card["seeds"]) == 3 and card["episodes_requested"] == 3
    assert card["failure_criterion"] == "the episode terminated early (the pole fell)"
    for score in (card["random"], card["teacher"], *card["students"].values()):
        stats = score["stats"]
        assert stats["episodes"] == 3 and stats["mean_ci"]["low"] <= stats["mean"] <= stats["mean_ci"]["high"]
        assert stats["iqm_ci"]["low"] <= stats["iqm"] <= stats["iqm_ci"]["high"]
        assert 0 <= stats["failures"] <= 3 and stats["failure_ci"]["low"] <= stats["failure_rate"]
        worst = score["worst"]
        assert sorted(e["seed"] for e in worst) == sorted(card["seeds"])  # 3 episodes: all of them are the worst
        assert [e["ret"] for e in worst] == sorted(e["ret"] for e in worst)
    for method in ("dagger", "bc"):
        ratio = card["normalized_retention"][method]
        assert ratio is None or ratio["ci"]["low"] <= ratio["value"] <= ratio["ci"]["high"]
    assert card["teacher_parameters"] > 0 and card["student_parameters"] > 0
    assert card["parity_max_abs_diff"] <= 1e-4 and card["parity_observations"] >= 256
    assert card["teacher_latency_ms"][0] > 0 and card["student_latency_ms"][0] > 0
    # DAgger's first iteration is the teacher's alone; its second lets the student drive half the time.
    # Then a failure check (and one more iteration when it found failures the teacher handles).
    dagger = card["iterations"]["dagger"]
    assert [line["beta"] for line in dagger[:2]] == [1.0, 0.5] and len(card["failure_checks"]) == 1
    assert len(dagger) == 2 + bool(card["failure_checks"][0]["teacher_handles"])
    assert [line["beta"] for line in card["iterations"]["bc"]] == [1.0] * len(dagger)
    assert dagger[-1]["dataset"] == card["dataset_size"] == 64 * len(dagger)
    text = (cfg.run_dir / "report.txt").read_text()
    assert "| report card |" in text and "worst episodes" in text and "failures" in text
    # The exported student: pixels and proprio in, its spec in the metadata, equal to the checkpoint's.
    session = ort.InferenceSession(str(cfg.run_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels", "proprio"]
    # Exported in its inference form (pooling and pixel scaling folded into the first convolution),
    # yet equal to the trained student: the parity above compares against the unfolded module.
    assert "AveragePool" not in {node.op_type for node in onnx.load(str(cfg.run_dir / "policy.onnx")).graph.node}
    onnx_spec = spec_from_onnx_metadata(session.get_modelmeta().custom_metadata_map)
    student, spec, saved = load_student(cfg.run_dir / STUDENT_CHECKPOINT)
    assert onnx_spec == spec and saved == cfg
    assert spec.provenance.model_sha256 == card["artifacts"]["weights_sha256"]
    assert isinstance(student, torch.nn.Module) and not student.training
    # `agent-runtime evaluate` on the exported teacher runs the card's episodes and finds its returns.
    evaluated = run_evaluate(EvaluateCommand(policy=cfg.run_dir / "teacher.onnx", episodes=3, out=tmp_path / "ev"))
    assert [e["seed"] for e in evaluated["episodes"]] == card["seeds"]
    assert evaluated["score"]["stats"]["mean"] == pytest.approx(card["teacher"]["stats"]["mean"], rel=1e-6)
    # `agent-runtime export` takes a student run directory as it takes a teacher's: same weights, same hash.
    again = run_export(ExportConfig(run_dir=cfg.run_dir, out=tmp_path / "again.onnx", latency_calls=0))
    assert again["policy"] == "student-conv" and again["weights_sha256"] == spec.provenance.model_sha256


def test_failure_checks_send_dagger_back_to_the_episodes_the_student_fails(tmp_path, state_run, monkeypatch):
    """A check that finds a failure the teacher handles makes one more, student-driven iteration replay it."""
    findings = iter([(7, 8), ()])
    checked: list[int] = []

    def check(self: FailureChecker, student: torch.nn.Module, after: int) -> FailureCheck:
        assert not student.training and next(student.parameters()).device.type == "cpu"
        checked.append(after)
        return FailureCheck(after, self.episodes, 2, next(findings))

    monkeypatch.setattr(FailureChecker, "check", check)
    cfg = tiny(state_run, tmp_path / "s", student="mlp", failure_iterations=3)
    card = run(cfg)
    dagger = card["iterations"]["dagger"]
    assert checked == [2, 3]  # after the fixed iterations, and after the one it caused; then it found none
    assert [(line["failure_aimed"], line["beta"], line["replayed_seeds"]) for line in dagger] == [
        (False, 1.0, []), (False, 0.5, []), (True, 0.0, [7, 8])
    ]  # fmt: skip
    assert len(card["iterations"]["bc"]) == 3 and card["dataset_size"] == 3 * 64
    assert [list(c["teacher_handles"]) for c in card["failure_checks"]] == [[7, 8], []]


def test_replayed_seeds_start_a_collection_then_fresh_seeds_follow():
    env = make_env("inverted_pendulum", "state")
    push = lambda _obs: np.array([3.0], dtype=np.float32)  # noqa: E731 (full force: a fall in a few steps)

    def episode(seed: int) -> tuple[np.ndarray, int]:
        """The first observation and the length of the full-force episode from ``seed``."""
        first, _ = env.reset(seed=seed)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(push(None))
            steps, done = steps + 1, terminated or truncated
        return first["state"], steps

    expected = [episode(s) for s in (5, 6, 100, 101)]
    total = sum(length for _, length in expected)
    bounds = (np.array([-3.0]), np.array([3.0]))
    got = collect(env, push, push, 1.0, total, ["state"], bounds, np.random.default_rng(0), 100, None, [5, 6])
    start = 0
    for first, length in expected:  # the replays (5, 6) first, then first_seed (100) onwards
        assert np.array_equal(got.observations["state"][start], first)
        start += length
    assert len(got.episode_returns) == 4
    env.close()


def test_state_teacher_distils_into_an_mlp_student_without_the_baseline(tmp_path, state_run):
    cfg = tiny(state_run, tmp_path / "s", student="mlp", baseline=False)
    report = run(cfg)
    assert set(report["students"]) == {"dagger"}
    assert report["student_policy"] == "student-mlp"


def test_bad_teachers_and_run_dirs_are_refused_with_the_reason(tmp_path, state_run):
    with pytest.raises(CheckpointError, match="does not exist"):
        run(tiny(tmp_path / "nowhere", tmp_path / "a"))
    corrupt = tmp_path / "corrupt"
    (corrupt / "checkpoints").mkdir(parents=True)
    (corrupt / CHECKPOINT_NAME).write_bytes((state_run / CHECKPOINT_NAME).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        run(tiny(corrupt, tmp_path / "b"))
    # A teacher whose spec no longer matches its preset: its action bounds were edited.
    mismatched = tmp_path / "mismatched"
    payload = load_checkpoint(state_run / CHECKPOINT_NAME)
    payload["spec"]["action"]["high"] = [5.0]
    fields = {k: v for k, v in payload.items() if k not in ("kind", "format_version")}
    save_checkpoint(mismatched / CHECKPOINT_NAME, fields)
    with pytest.raises(SpecMismatchError, match=r"action\.high"):
        run(tiny(mismatched, tmp_path / "c"))
    for failed in ("a", "b", "c"):
        assert not (tmp_path / failed).exists(), "a refused run left a directory behind"
    with pytest.raises(ValueError, match="the student architectures are conv, mlp"):
        DistillConfig(student="transformer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the student needs its own"):
        DistillConfig(teacher=state_run, run_dir=state_run)


def test_a_chunked_student_learns_the_teachers_next_actions_and_exports_its_chunk(tmp_path, state_run):
    from agent_runtime.chunks import ChunkedActions
    from agent_runtime.client import ClientConfig, PolicyClient
    from agent_runtime.onnx_policy import OnnxPolicy
    from agent_runtime.server import ServerConfig, serve_in_thread

    cfg = tiny(state_run, tmp_path / "chunked", student="mlp", chunk=4, chunk_noise=0.3)
    card = run(cfg)
    assert set(card["students"]) == {"chunk"} and card["student_policy"] == "student-mlp-chunk4"
    assert [line["beta"] for line in card["iterations"]["chunk"]] == [1.0, 1.0]  # the teacher drives every step
    assert not card["failure_checks"]
    # Row t's chunk labels are the labels of rows t, t + 1, ... of its episode (the teacher's next actions).
    labels = np.load(cfg.run_dir / "data" / "chunk" / "labels.npy")[:128]  # 2 iterations of 64 rows filled
    mask = np.load(cfg.run_dir / "data" / "chunk" / "label_mask.npy")[:128]
    assert labels.shape == (128, 4, 1) and mask[:, 0].all() and not mask[63, 1]  # no chunk spans two collections
    inside = mask[:-1, 1] == 1
    np.testing.assert_array_equal(labels[:-1, 1][inside], labels[1:, 0][inside])
    policy = OnnxPolicy(cfg.run_dir / "policy.onnx")
    chunk = policy.spec.action_chunk
    assert chunk is not None and chunk.horizon == 4 and chunk.period_s == policy.spec.control_period_s
    student, spec, _ = load_student(cfg.run_dir / STUDENT_CHECKPOINT)
    assert spec == policy.spec and student.chunk == 4
    obs = {"state": np.zeros((2, *spec.observation("state").shape), np.float32)}
    assert policy.infer(obs).shape == (2, 4, spec.action.dim)
    # Served and driven through the robot host's queue, like any student.
    config = ServerConfig(endpoint="tcp://127.0.0.1:*", log_every_s=0)
    with (
        serve_in_thread(policy, config) as server,
        PolicyClient(ClientConfig(server.endpoint), spec.with_chunk(None)) as client,
    ):
        client.connect()
        source = ChunkedActions(client)
        source.start_episode({"state": obs["state"][0]})
        assert source.stats.chunks == 1


def test_chunk_noise_without_a_chunk_is_refused_by_name(tmp_path, state_run):
    with pytest.raises(ValueError, match="chunk_noise is for a chunked student"):
        tiny(state_run, tmp_path / "s", chunk_noise=0.2)
