"""The distill stage: teacher run in, student run out (checkpoint, ONNX file, report card).

1. Load the teacher, check its spec against the preset, export it to ONNX (the teacher's latency is
   measured on that file, and it labels the students' observations in onnxruntime).
2. DAgger: iterations of collect (mixture policy), label, aggregate, train. Behaviour cloning, the
   baseline, gets the same data and update budget with the teacher driving every step.
3. Evaluate random actions, the teacher, and both students on the same held-out seeds.
4. Export the DAgger student with its parity check, time both ONNX files, write the report card.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from agent_runtime.spec import ONNX_ACTION_OUTPUT, PolicySpec
from distill.collect import Actor, collect_observations, torch_actor
from distill.collector import LocalDaggerCollector, student_weights
from distill.config import DistillConfig
from distill.dagger import train_student
from distill.dataset import Dataset
from distill.export import export_policy
from distill.latency import onnx_latency, parameter_counts
from distill.report import ReportCard, Returns
from distill.run_policy import load_run_policy
from distill.student_checkpoint import STUDENT_CHECKPOINT, build_student, save_student
from models.student import Student
from train.allocator import keep_freed_memory
from train.device import resolve_device
from train.envs import build_spec, make_env
from train.evaluate import eval_seeds, evaluate
from train.onnx_io import cpu_session
from train.presets import get_preset

log = logging.getLogger(__name__)

REPORT_NAME = "report.json"
COLLECTION_SEED_BASE = 10_000
"""Collection episodes start here (per seed and iteration), apart from training's and evaluation's seeds."""


class ActorPolicy:
    """An :data:`Actor` as an evaluation policy; the environment already stacks the frame history."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    def reset(self) -> None:
        """Nothing to clear: observations carry their own history."""

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The action for one observation."""
        return self.actor(observation)


def onnx_actor(path: Path, names: tuple[str, ...], threads: int) -> Actor:
    """An exported policy in onnxruntime as an :data:`Actor` (batch of one)."""
    session = cpu_session(path, threads)

    def act(observation: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(observation[name][None]) for name in names}
        (action,) = session.run([ONNX_ACTION_OUTPUT], feed)
        return np.asarray(action[0])

    return act


def random_actor(spec: PolicySpec, seed: int) -> Actor:
    """Uniformly random actions within the bounds: the floor every policy is compared with."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(spec.action.low), np.asarray(spec.action.high)
    return lambda _observation: rng.uniform(low, high).astype(np.float32)


def run(cfg: DistillConfig) -> dict[str, Any]:
    """Distill ``cfg.teacher`` into a student as ``cfg`` says; returns (and saves) the report card.

    The student trains on ``cfg.device``; collection, labelling, evaluation and export run on the CPU.
    """
    device = resolve_device(cfg.device)
    keep_freed_memory()
    torch.set_num_threads(cfg.threads)
    teacher = load_run_policy(cfg.teacher)
    if (cfg.run_dir / STUDENT_CHECKPOINT).exists():
        raise ValueError(f"{cfg.run_dir} already holds a student; choose another --run-dir")
    preset, teacher_mode = teacher.preset, teacher.mode
    task = get_preset(preset)
    student_mode = cfg.student_mode
    spec = build_spec(preset, student_mode).with_provenance(policy=f"student-{cfg.student}", encoder=None)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)

    log.info("exporting the teacher to ONNX (its latency, and fast labels)")
    teacher_obs = collect_observations(preset, teacher_mode, 256, cfg.seed, torch_actor(teacher.module))
    teacher_onnx = export_policy(teacher.module, teacher.spec, cfg.run_dir / "teacher.onnx", teacher_obs)
    teacher_actor = onnx_actor(teacher_onnx.path, teacher.spec.observation_names, cfg.threads)

    def make() -> gym.Env[dict[str, np.ndarray], np.ndarray]:
        if teacher_mode == student_mode:
            return make_env(preset, student_mode)
        return make_env(preset, "pixels", with_state=True)  # a state teacher labels a pixel student, or back

    methods = ["dagger", "bc"] if cfg.baseline else ["dagger"]
    students: dict[str, Student] = {}
    datasets: dict[str, Dataset] = {}
    history: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        torch.manual_seed(cfg.seed)
        student = build_student(cfg, spec).to(device)
        datasets[method] = Dataset(cfg.run_dir / "data" / method, spec, cfg.capacity)
        history[method] = _imitate(cfg, method, student, datasets[method], teacher_actor, make, spec)
        students[method] = student.cpu()  # evaluated and exported on the CPU, as the robot runs it

    log.info("evaluating random actions, the teacher and the students on %d held-out seeds", cfg.eval_episodes)
    seeds = eval_seeds(cfg.seed, cfg.eval_episodes)
    random_return = evaluate(ActorPolicy(random_actor(spec, cfg.seed)), task, student_mode, seeds)
    teacher_return = evaluate(ActorPolicy(teacher_actor), task, teacher_mode, seeds)
    video = cfg.run_dir / "student.mp4" if cfg.video else None
    student_returns = {
        method: evaluate(
            ActorPolicy(torch_actor(student)),
            task,
            student_mode,
            seeds,
            video if method == "dagger" else None,
        )
        for method, student in students.items()
    }

    student = students["dagger"]
    dataset = datasets["dagger"]
    parity_rows = np.linspace(0, len(dataset) - 1, num=min(len(dataset), 512)).astype(np.int64)
    parity_obs, _ = dataset.batch(parity_rows)
    if len(parity_rows) < 256:
        parity_obs = collect_observations(preset, student_mode, 256, cfg.seed, torch_actor(student))
    exported = export_policy(student, spec, cfg.run_dir / "policy.onnx", parity_obs)
    save_student(cfg, exported.spec, student, history)

    latency = {}
    if cfg.latency_calls:
        one_teacher = {k: v[0] for k, v in teacher_obs.items()}
        one_student = {k: v[0] for k, v in parity_obs.items()}
        latency = {
            "teacher": onnx_latency(teacher_onnx.path, one_teacher, cfg.latency_calls),
            "student": onnx_latency(exported.path, one_student, cfg.latency_calls),
        }
    card = ReportCard(
        preset=preset,
        teacher_policy=str(teacher.spec.provenance.policy),
        student_policy=f"student-{cfg.student}",
        seeds=tuple(seeds),
        random=Returns.of(random_return.returns),
        teacher=Returns.of(teacher_return.returns),
        students={method: Returns.of(result.returns) for method, result in student_returns.items()},
        teacher_parameters=parameter_counts(teacher.module)["total"],
        student_parameters=parameter_counts(student)["total"],
        teacher_latency_ms=(latency["teacher"].p50_ms, latency["teacher"].p99_ms) if latency else None,
        student_latency_ms=(latency["student"].p50_ms, latency["student"].p99_ms) if latency else None,
        parity_max_abs_diff=exported.parity.max_abs_diff,
        parity_observations=exported.parity.observations,
        dataset_size=cfg.capacity,
    )
    report = {
        **card.to_dict(),
        "artifacts": {
            "student_onnx": str(exported.path),
            "teacher_onnx": str(teacher_onnx.path),
            "checkpoint": str(cfg.run_dir / STUDENT_CHECKPOINT),
            "video": str(video) if video else None,
            "weights_sha256": exported.spec.provenance.model_sha256,
        },
        "iterations": history,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
    }
    tmp = cfg.run_dir / f".{REPORT_NAME}.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(cfg.run_dir / REPORT_NAME)
    (cfg.run_dir / "report.txt").write_text(card.table() + "\n")
    return report


def _imitate(
    cfg: DistillConfig,
    method: str,
    student: Student,
    dataset: Dataset,
    teacher: Actor,
    make: Any,
    spec: PolicySpec,
) -> list[dict[str, Any]]:
    """All iterations of one method (``dagger`` or ``bc``); returns a line of numbers per iteration."""
    device = next(student.parameters()).device  # where it trains; the collector acts with a CPU copy
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    bounds = (np.asarray(spec.action.low), np.asarray(spec.action.high))
    lines = []
    collector = LocalDaggerCollector(
        make(), build_student(cfg, spec), teacher, spec.observation_names, bounds, cfg.seed
    )
    # Collection steps of all iterations; the bar's rate is steps/s while collecting and labelling.
    bar = tqdm(total=cfg.capacity, unit="step", desc=f"distill {method}", mininterval=1.0, disable=None)
    try:
        for i in range(cfg.iterations):
            beta = cfg.beta(i) if method == "dagger" else 1.0
            first_seed = COLLECTION_SEED_BASE + cfg.seed * 1_000_000 + i * 10_000
            began = time.perf_counter()
            got = collector.collect(
                student_weights(student), beta, cfg.steps_per_iteration, first_seed, progress=lambda: bar.update(1)
            )
            bar.set_postfix(iteration=f"{i + 1}/{cfg.iterations}", phase="training")
            dataset.append(got.observations, got.labels)
            collected = time.perf_counter()
            metrics = train_student(student, optimizer, dataset, cfg.updates_per_iteration, cfg.batch_size, rng, device)
            trained = time.perf_counter()
            returns = got.episode_returns
            line = {
                "iteration": i,
                "beta": beta,
                "teacher_share": got.teacher_steps / cfg.steps_per_iteration,
                "dataset": len(dataset),
                "collection_return": float(np.mean(returns)) if returns else None,
                "collect_steps_per_s": cfg.steps_per_iteration / (collected - began),
                "updates_per_s": cfg.updates_per_iteration / (trained - collected),
                **metrics,
            }
            lines.append(line)
            log.info(
                "%s iteration %d/%d: beta %.2f, dataset %d, imitation loss %.4f -> %.4f, collection return %s "
                "(%.0f steps/s collecting, %.1f updates/s)",
                method, i + 1, cfg.iterations, beta, len(dataset), metrics["loss/imitation_first"],
                metrics["loss/imitation_last"], "n/a" if not returns else f"{np.mean(returns):.1f}",
                line["collect_steps_per_s"], line["updates_per_s"],
            )  # fmt: skip
    finally:
        bar.close()
        collector.close()
    return lines
