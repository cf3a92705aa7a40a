"""Build a student from its config, and save or load it as a plain checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agent_runtime.spec import PolicySpec
from distill.config import DistillConfig
from models.student import ConvStudent, MLPStudent, Student
from train.checkpoint import STUDENT_KIND, load_checkpoint, save_checkpoint
from train.teacher import config_from_dict, config_to_dict

STUDENT_CHECKPOINT = "checkpoints/student.pt"


def build_student(cfg: DistillConfig, spec: PolicySpec) -> Student:
    """A freshly initialized student of ``cfg.student`` for ``spec`` (seed torch first)."""
    low, high = torch.tensor(spec.action.low), torch.tensor(spec.action.high)
    if cfg.student == "conv":
        if "pixels" not in spec.observation_names:
            raise ValueError("a conv student needs camera frames: its spec has no 'pixels' entry")
        h, w, c = spec.observation("pixels").shape
        proprio = spec.observation("proprio").shape[0] if "proprio" in spec.observation_names else 0
        return ConvStudent((h, w, c), proprio, low, high, cfg.channels, cfg.downsample, cfg.hidden, cfg.chunk)
    if "state" not in spec.observation_names:
        raise ValueError("an mlp student needs the state vector: its spec has no 'state' entry")
    return MLPStudent(spec.observation("state").shape[0], low, high, cfg.hidden, cfg.chunk)


def save_student(cfg: DistillConfig, spec: PolicySpec, student: Student, history: dict[str, Any]) -> Path:
    """Write the student run's checkpoint (atomically); returns its path."""
    path = cfg.run_dir / STUDENT_CHECKPOINT
    payload = {
        "config": config_to_dict(cfg),
        "spec": spec.to_dict(),
        "student": student.state_dict(),
        "history": history,
    }
    save_checkpoint(path, payload, kind=STUDENT_KIND)
    return path


def load_student(path: Path) -> tuple[Student, PolicySpec, DistillConfig]:
    """The student of a checkpoint written by :func:`save_student`, in eval mode."""
    payload = load_checkpoint(path, kind=STUDENT_KIND)
    cfg = config_from_dict(DistillConfig, payload["config"])
    spec = PolicySpec.from_dict(payload["spec"])
    student = build_student(cfg, spec)
    student.load_state_dict(payload["student"])
    return student.eval(), spec, cfg
