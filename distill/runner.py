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
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from agent_runtime.files import write_text_atomically
from agent_runtime.spec import PolicySpec
from distill.actors import ActorPolicy, onnx_actor, random_actor, torch_actor
from distill.collect import collect_observations
from distill.collector import ITERATION_SEEDS, DaggerCollector, LocalDaggerCollector, student_weights
from distill.config import DistillConfig
from distill.dagger import chunk_labels, train_student
from distill.dataset import Dataset
from distill.export import export_policy
from distill.failure_check import FailureCheck, FailureChecker
from distill.latency import onnx_latency, parameter_counts
from distill.report import ReportCard
from distill.run_policy import load_run_policy
from distill.student_checkpoint import STUDENT_CHECKPOINT, build_student, save_student
from models.student import Student
from train.allocator import keep_freed_memory
from train.device import resolve_device
from train.envs import build_spec, make_env
from train.evaluate import eval_seeds, evaluate
from train.failure import report_rule
from train.preset_file import save_preset_copy
from train.presets import get_preset
from train.ray_actors import import_ray, ray_session
from train.score_text import returns_text
from train.scores import score
from train.stats import retention

log = logging.getLogger(__name__)

REPORT_NAME = "report.json"
COLLECTION_SEED_BASE = 10_000
"""Collection episodes start here (per seed and iteration), apart from training's and evaluation's seeds."""


def run(cfg: DistillConfig) -> dict[str, Any]:
    """Distill ``cfg.teacher`` into a student as ``cfg`` says; returns (and saves) the report card.

    The student trains on ``cfg.device``; collection, labelling, evaluation and export run on the CPU.
    """
    device = resolve_device(cfg.device)
    if cfg.collectors > 0:
        import_ray()  # before anything is written: without Ray, one line naming the extra
    keep_freed_memory()
    torch.set_num_threads(cfg.threads)
    teacher = load_run_policy(cfg.teacher)
    if (cfg.run_dir / STUDENT_CHECKPOINT).exists():
        unfinished = "" if (cfg.run_dir / REPORT_NAME).exists() else " from a distillation stopped before its report"
        raise ValueError(
            f"{cfg.run_dir} already holds a student{unfinished}; choose another --run-dir, or remove that "
            "directory to distill again (distillation does not resume)"
        )
    preset, teacher_mode = teacher.preset, teacher.mode
    task = get_preset(preset)
    student_mode = cfg.student_mode
    kind = f"student-{cfg.student}" + (f"-chunk{cfg.chunk}" if cfg.chunk > 1 else "")
    spec = build_spec(preset, student_mode).with_provenance(policy=kind, encoder=None).with_chunk(cfg.chunk)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    save_preset_copy(task, cfg.run_dir)  # the student's run keeps the teacher's task definition too

    log.info("exporting the teacher to ONNX (its latency, and fast labels)")
    teacher_obs = collect_observations(preset, teacher_mode, 256, cfg.seed, torch_actor(teacher.module))
    teacher_onnx = export_policy(teacher.module, teacher.spec, cfg.run_dir / "teacher.onnx", teacher_obs)
    teacher_actor = onnx_actor(teacher_onnx.path, teacher.spec.observation_names, cfg.threads)

    def make() -> gym.Env[dict[str, np.ndarray], np.ndarray]:
        if teacher_mode == student_mode:
            return make_env(preset, student_mode)
        return make_env(preset, "pixels", with_state=True)  # a state teacher labels a pixel student, or back

    # The report's held-out episodes: the teacher runs first, within the budget; every other policy
    # runs exactly the seeds it reached. The failure criterion is settled here, before any student.
    log.info("evaluating the teacher on up to %d held-out seeds (at most %.0f s)", cfg.eval_episodes, cfg.eval_seconds)
    held_out = eval_seeds(cfg.seed, cfg.eval_episodes)
    teacher_result = evaluate(ActorPolicy(teacher_actor), task, teacher_mode, held_out, budget_s=cfg.eval_seconds)
    seeds = list(teacher_result.seeds)
    random_result = evaluate(ActorPolicy(random_actor(spec, cfg.seed)), task, student_mode, seeds)
    rule = report_rule(task, teacher_result.returns, random_result.returns, cfg.failure_fraction, cfg.failure_below)
    log.info(
        "teacher: %s; failure criterion: %s", returns_text(score(teacher_result, rule).stats.to_dict()),
        rule.describe() or "none",
    )  # fmt: skip

    checker = None
    if rule.defined and cfg.failure_iterations > 0:
        checker = FailureChecker(
            task, student_mode, teacher_mode, teacher_actor, rule, cfg.seed, cfg.check_episodes, cfg.check_seconds
        )
    bounds = (np.asarray(spec.action.low), np.asarray(spec.action.high))

    def new_collector() -> DaggerCollector:
        """A fresh collector (its random stream from the start) for one method's iterations."""
        if cfg.collectors > 0:
            from distill.ray_collectors import RayDaggerCollectors

            names = teacher.spec.observation_names
            return RayDaggerCollectors(cfg, make, spec, teacher_onnx.path, names, bounds)
        student = build_student(cfg, spec)
        return LocalDaggerCollector(
            make(), student, teacher_actor, spec.observation_names, bounds, cfg.seed, noise=cfg.chunk_noise
        )

    # A chunked student learns the teacher's own future, which exists only where the teacher drives.
    methods = ["chunk"] if cfg.chunk > 1 else ["dagger", "bc"] if cfg.baseline else ["dagger"]
    primary = methods[0]
    students: dict[str, Student] = {}
    datasets: dict[str, Dataset] = {}
    history: dict[str, list[dict[str, Any]]] = {}
    checks: list[FailureCheck] = []
    # One Ray instance for both methods' collectors (each method starts its collectors afresh).
    session = ray_session(cfg.ray_address, cfg.collectors, "DAgger collectors") if cfg.collectors else nullcontext()
    with session:
        for method in methods:
            torch.manual_seed(cfg.seed)
            student = build_student(cfg, spec).to(device)
            datasets[method] = Dataset(cfg.run_dir / "data" / method, spec, cfg.capacity)
            if method == "dagger":
                history[method] = _imitate(
                    cfg, method, student, datasets[method], new_collector, spec, checker=checker, checks=checks
                )
            elif method == "chunk":
                history[method] = _imitate(cfg, method, student, datasets[method], new_collector, spec)
            else:  # the same budget as DAgger's, failure-aimed iterations included; the teacher drives them
                history[method] = _imitate(
                    cfg, method, student, datasets[method], new_collector, spec, iterations=len(history["dagger"])
                )
            students[method] = student.cpu()  # evaluated and exported on the CPU, as the robot runs it

    log.info("evaluating the students on the %d held-out seeds", len(seeds))
    video = cfg.run_dir / "student.mp4" if cfg.video else None
    student_results = {
        method: evaluate(
            ActorPolicy(torch_actor(student)), task, student_mode, seeds, video if method == primary else None
        )
        for method, student in students.items()
    }

    student = students[primary]
    dataset = datasets[primary]
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
        student_policy=kind,
        seeds=tuple(seeds),
        episodes_requested=cfg.eval_episodes,
        eval_seconds=cfg.eval_seconds,
        failure_criterion=rule.describe(),
        random=score(random_result, rule, cfg.seed),
        teacher=score(teacher_result, rule, cfg.seed),
        students={method: score(result, rule, cfg.seed) for method, result in student_results.items()},
        retention={m: retention(r.returns, teacher_result.returns, seed=cfg.seed) for m, r in student_results.items()},
        normalized_retention={
            m: retention(r.returns, teacher_result.returns, random_result.returns, seed=cfg.seed)
            for m, r in student_results.items()
        },
        failure_checks=tuple(checks),
        teacher_parameters=parameter_counts(teacher.module)["total"],
        student_parameters=parameter_counts(student)["total"],
        teacher_latency_ms=(latency["teacher"].p50_ms, latency["teacher"].p99_ms) if latency else None,
        student_latency_ms=(latency["student"].p50_ms, latency["student"].p99_ms) if latency else None,
        parity_max_abs_diff=exported.parity.max_abs_diff,
        parity_observations=exported.parity.observations,
        dataset_size=len(datasets[primary]),
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
    # report.txt first, report.json last and each atomically: report.json marks a finished distillation.
    write_text_atomically(cfg.run_dir / "report.txt", card.table() + "\n")
    write_text_atomically(cfg.run_dir / REPORT_NAME, json.dumps(report, indent=2))
    log.info("report card:\n%s", card.table())
    return report


def _imitate(
    cfg: DistillConfig,
    method: str,
    student: Student,
    dataset: Dataset,
    new_collector: Callable[[], DaggerCollector],
    spec: PolicySpec,
    iterations: int | None = None,
    checker: FailureChecker | None = None,
    checks: list[FailureCheck] | None = None,
) -> list[dict[str, Any]]:
    """All iterations of one method (``dagger`` or ``bc``); returns a line of numbers per iteration.

    Args:
        cfg: the distillation's settings.
        method: ``dagger`` (the mixture of teacher and student drives) or ``bc`` (the teacher drives).
        student: the student, on the device it trains on.
        dataset: the method's aggregated dataset.
        new_collector: builds the collector (environment, student copy, teacher labels) for these iterations.
        spec: the student's spec.
        iterations: how many (default ``cfg.iterations``; behaviour cloning matches DAgger's count).
        checker: DAgger only: after the fixed iterations, it checks a CPU copy of the student; while
            it finds episodes the teacher handles and ``cfg.failure_iterations`` remain, one more
            iteration replays them (student-driven) and trains.
        checks: where each check's finding is appended.
    """
    device = next(student.parameters()).device  # where it trains; the collector acts with a CPU copy
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    lines = []
    collector = new_collector()
    # Collection steps of all iterations; the bar's rate is steps/s while collecting and labelling.
    planned = cfg.iterations if iterations is None else iterations
    total = planned * cfg.steps_per_iteration
    bar = tqdm(total=total, unit="step", desc=f"distill {method}", mininterval=1.0, disable=None)
    cpu_student = build_student(cfg, spec).eval()  # what the failure checks act with
    try:
        i = 0
        replay: tuple[int, ...] = ()
        while True:
            if i >= planned:
                if checker is None or i >= cfg.iterations + cfg.failure_iterations:
                    break
                cpu_student.load_state_dict(student_weights(student))
                found = checker.check(cpu_student, i)
                if checks is not None:
                    checks.append(found)
                replay = found.teacher_handles
                if not replay:
                    break
                bar.total += cfg.steps_per_iteration
            aimed = i >= cfg.iterations  # a failure-aimed iteration: the student drives every step
            beta = 0.0 if aimed and method == "dagger" else cfg.beta(i) if method == "dagger" else 1.0  # bc, chunk: 1
            first_seed = COLLECTION_SEED_BASE + cfg.seed * 1_000_000 + i * ITERATION_SEEDS
            began = time.perf_counter()
            got = collector.collect(
                student_weights(student), beta, cfg.steps_per_iteration, first_seed, progress=lambda: bar.update(1),
                replay_seeds=replay,
            )  # fmt: skip
            bar.set_postfix(iteration=f"{i + 1}/{max(planned, i + 1)}", phase="training")
            if student.chunk > 1:
                assert got.episodes is not None, "a chunked student needs each row's episode"
                labels, mask = chunk_labels(got.labels, got.episodes, student.chunk)
                dataset.append(got.observations, labels, mask)
            else:
                dataset.append(got.observations, got.labels)
            collected = time.perf_counter()
            metrics = train_student(student, optimizer, dataset, cfg.updates_per_iteration, cfg.batch_size, rng, device)
            trained = time.perf_counter()
            returns = got.episode_returns
            line: dict[str, Any] = {
                "iteration": i,
                "failure_aimed": aimed,
                "replayed_seeds": list(replay),
                "beta": beta,
                "teacher_share": got.teacher_steps / cfg.steps_per_iteration,
                "dataset": len(dataset),
                "collection_return": float(np.mean(returns)) if returns else None,
                "collect_steps_per_s": cfg.steps_per_iteration / (collected - began),
                "updates_per_s": cfg.updates_per_iteration / (trained - collected),
                **metrics,
            }
            lines.append(line)
            i += 1
            log.info(
                "%s iteration %d/%d: beta %.2f, dataset %d, imitation loss %.4f -> %.4f, collection return %s "
                "(%.0f steps/s collecting, %.1f updates/s)",
                method, i, max(planned, i), beta, len(dataset), metrics["loss/imitation_first"],
                metrics["loss/imitation_last"], "n/a" if not returns else f"{np.mean(returns):.1f}",
                line["collect_steps_per_s"], line["updates_per_s"],
            )  # fmt: skip
    finally:
        bar.close()
        collector.close()
    return lines
