"""Policies and observations for the serving benchmarks: exported students, or stand-ins of their shape.

When no exported student is given, the benchmark exports a stand-in: the default student of
``distill`` (``DistillConfig``'s conv student for pixels, its MLP student for state) with random
weights, through the same exporter, so its graph, its cost and its metadata are an export's.
Observations are recorded from the task's environment with random actions, so the pixels are real
rendered frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agent_runtime.spec import PolicySpec
from distill.config import DistillConfig
from distill.export import export_policy
from distill.student_checkpoint import build_student as build_distill_student
from train.envs import build_spec, make_env


def build_student(spec: PolicySpec, observations: Path, path: Path, seed: int = 0) -> Path:
    """Export a default student for ``spec`` with random weights to ``path``; ``observations`` (npz) for parity."""
    torch.manual_seed(seed)
    cfg = DistillConfig(student="conv" if "pixels" in spec.observation_names else "mlp")
    kind = cfg.student
    student = build_distill_student(cfg, spec)
    student = student.eval()
    with np.load(observations) as data:
        recorded = {name: data[name] for name in spec.observation_names}
    stand_in = spec.with_provenance(policy=f"bench stand-in student-{kind} (random weights)")
    export_policy(student, stand_in, path, recorded)
    return path


def record_observations(preset: str, mode: str, steps: int, path: Path, seed: int = 0) -> Path:
    """Step the preset's environment with random actions and save ``steps`` observations to ``path`` (npz).

    Refuses black or frozen camera frames (shared/FACTS.md: a broken GL context returns them very fast).
    """
    env = make_env(preset, mode)  # type: ignore[arg-type]
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        recorded: dict[str, list[np.ndarray]] = {k: [] for k in obs}
        for _ in range(steps):
            for k, v in obs.items():
                recorded[k].append(v)
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    arrays = {k: np.stack(v) for k, v in recorded.items()}
    if "pixels" in arrays:
        frames = arrays["pixels"][..., -3:]
        if (frames.max(axis=-1) > 30).mean() < 0.02 or np.array_equal(frames[0], frames[-1]):
            raise RuntimeError(f"{preset}: recorded frames are black or frozen")
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return path


def spec_for(preset: str, mode: str) -> PolicySpec:
    """The preset's spec in this mode (what an exported student of it carries)."""
    return build_spec(preset, mode)  # type: ignore[arg-type]
