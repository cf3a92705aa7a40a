"""The distill stage end to end on tiny budgets, and its bad inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest
import torch

from agent_runtime.spec import SpecMismatchError, spec_from_onnx_metadata
from distill.config import DistillConfig
from distill.export import run_export
from distill.export_config import ExportConfig
from distill.runner import REPORT_NAME, run
from distill.student_checkpoint import STUDENT_CHECKPOINT, load_student
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.run_files import CHECKPOINT_NAME

TINY = DistillConfig(iterations=2, steps_per_iteration=64, updates_per_iteration=5, batch_size=16, eval_episodes=2,
                     latency_calls=10, hidden=(16, 16), channels=8, video=False)  # fmt: skip


def tiny(teacher: Path, run_dir: Path, **changes: Any) -> DistillConfig:
    return dataclasses.replace(TINY, teacher=teacher, run_dir=run_dir, **changes)


def test_privileged_state_teacher_distils_into_a_pixel_student(tmp_path, state_run):
    cfg = tiny(state_run, tmp_path / "student", student="conv")
    report = run(cfg)
    card = json.loads((cfg.run_dir / REPORT_NAME).read_text())
    assert card == json.loads(json.dumps(report))
    assert set(card["students"]) == {"dagger", "bc"}
    assert card["teacher_policy"] == "sac-state" and card["student_policy"] == "student-conv"
    assert len(card["teacher"]["episodes"]) == 2 and len(card["random"]["episodes"]) == 2
    assert card["teacher_parameters"] > 0 and card["student_parameters"] > 0
    assert card["parity_max_abs_diff"] <= 1e-4 and card["parity_observations"] >= 256
    assert card["teacher_latency_ms"][0] > 0 and card["student_latency_ms"][0] > 0
    # DAgger's first iteration is the teacher's alone; its second lets the student drive half the time.
    assert [line["beta"] for line in card["iterations"]["dagger"]] == [1.0, 0.5]
    assert [line["beta"] for line in card["iterations"]["bc"]] == [1.0, 1.0]
    assert card["iterations"]["dagger"][-1]["dataset"] == 128
    assert "| report card |" in (cfg.run_dir / "report.txt").read_text()
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
    # `agent-runtime export` takes a student run directory as it takes a teacher's: same weights, same hash.
    again = run_export(ExportConfig(run_dir=cfg.run_dir, out=tmp_path / "again.onnx", latency_calls=0))
    assert again["policy"] == "student-conv" and again["weights_sha256"] == spec.provenance.model_sha256


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
