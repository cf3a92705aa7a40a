"""The demo's single report: the stages' results side by side, and where every artifact is.

Built from plain JSON (the teacher's ``summary.json``, the distill ``report.json``, the robot stage's
result), so a resumed demo reports stages finished in an earlier run exactly like fresh ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from train.score_text import failure_text, returns_text, worst_text

ARTIFACT_NAMES = {
    "teacher_checkpoint": "teacher checkpoint",
    "teacher_video": "teacher video (evaluation episode)",
    "tensorboard": "TensorBoard logs (tensorboard --logdir ...)",
    "teacher_summary": "teacher training summary",
    "student_onnx": "student policy (ONNX, served to the robot)",
    "teacher_onnx": "teacher policy (ONNX)",
    "student_video": "student video (evaluation episode)",
    "student_checkpoint": "student checkpoint",
    "distill_report": "distillation report card",
    "robot_result": "robot loop result",
    "demo_report": "this report",
    "demo_report_json": "this report (JSON)",
}
TRAINING_KEYS = ("steps", "wall_time_s", "steps_per_s", "learning_steps_per_s", "encoder", "final_eval", "evals")
"""What the report keeps of the teacher's training summary."""


def json_ready(data: Any) -> Any:
    """``data`` with every non-finite float (a percentile of no samples) as ``None``: strict JSON."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {str(k): json_ready(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_ready(v) for v in data]
    return data


def training_line(summary: dict[str, Any], detail: str = "") -> str:
    """A training summary's steps, time and speed, saying which part ran after a resume.

    ``detail`` goes inside the parentheses after the speed.
    """
    resumed = summary.get("resumed_at_step", 0)
    steps = f"{summary['steps']:,} steps"
    if resumed:
        steps += f" ({summary['steps'] - resumed:,} after resuming at {resumed:,})"
    return f"{steps} in {summary['wall_time_s']:.0f} s ({summary['steps_per_s']} steps/s{detail})"


def build_report(
    config: dict[str, Any],
    teacher: dict[str, Any],
    card: dict[str, Any],
    robot: dict[str, Any],
    stages: dict[str, Any],
    artifacts: dict[str, str],
) -> dict[str, Any]:
    """The demo report as plain JSON types.

    Args:
        config: the demo's settings.
        teacher: the train stage's ``summary.json``.
        card: the distill stage's ``report.json`` (returns of random, teacher and students on the same seeds).
        robot: the serve + robot stage's result.
        stages: seconds each stage took in the run that finished it.
        artifacts: artifact name to path.
    """
    scores = {
        "random": card["random"],
        "teacher": card["teacher"],
        **{f"student_{method}": s for method, s in card["students"].items()},
    }
    return json_ready(
        {
            "preset": card["preset"],
            "evaluation_seeds": card["seeds"],
            "failure_criterion": card["failure_criterion"],
            "scores": scores,
            "retention": card["retention"],
            "normalized_retention": card["normalized_retention"],
            "parameters": {"teacher": card["teacher_parameters"], "student": card["student_parameters"]},
            "compression": card["compression"],
            "latency_ms": {"teacher": card["teacher_latency_ms"], "student": card["student_latency_ms"]},
            "speedup": card["speedup"],
            "parity_max_abs_diff": card["parity_max_abs_diff"],
            "teacher_training": {k: teacher.get(k) for k in TRAINING_KEYS},
            "robot": robot,
            "stages": stages,
            "artifacts": {name: {"path": path, "exists": Path(path).exists()} for name, path in artifacts.items()},
            "config": config,
        }
    )


def report_text(report: dict[str, Any]) -> str:
    """The report as two Markdown tables: the numbers, then the artifacts."""
    scores, robot, loop = report["scores"], report["robot"], report["robot"]["loop"]
    training = report["teacher_training"]
    random_mean = scores["random"]["stats"]["mean"]
    seeds = report["evaluation_seeds"]
    rows = [
        (
            "task",
            f"{report['preset']}; {len(seeds)} held-out episodes, the same seeds for every policy; failure: "
            f"{report['failure_criterion'] or 'no criterion'}",
        ),
        (
            "teacher training",
            training_line(training, f"; {training['learning_steps_per_s']} while learning")
            + f", {training['encoder']}",
        ),
        ("random actions: return", returns_text(scores["random"]["stats"])),
        ("teacher: return (mean, IQM, 95% intervals)", returns_text(scores["teacher"]["stats"])),
        ("teacher: failures", failure_text(scores["teacher"]["stats"])),
    ]
    for key, value in scores.items():
        if not key.startswith("student_"):
            continue
        method = key.removeprefix("student_")
        name = "DAgger" if method == "dagger" else "behaviour cloning"
        stats = value["stats"]
        rows += [
            (f"student ({name}): return", f"{returns_text(stats)}; {_above(stats['mean'], random_mean)}"),
            (f"student ({name}): failures", failure_text(stats)),
            (f"student ({name}): worst episodes (seed: return)", worst_text(value)),
            (f"student ({name}): retention, student / teacher", _pct(report["retention"][method])),
            (f"student ({name}): retention, (s - random) / (t - random)", _pct(report["normalized_retention"][method])),
        ]
    params = report["parameters"]
    rows += [
        (
            "parameters: teacher (encoder included) / student",
            f"{params['teacher']:,} / {params['student']:,}: {report['compression']:.1f}x compression",
        ),
        ("latency, teacher ONNX (onnxruntime, 1 thread, batch 1)", _ms(report["latency_ms"]["teacher"])),
        ("latency, student ONNX (onnxruntime, 1 thread, batch 1)", _ms(report["latency_ms"]["student"])),
        ("speed-up (p50)", "n/a" if report["speedup"] is None else f"{report['speedup']:.1f}x"),
    ]
    episodes = robot["episode_returns"]
    finished = f"{len(episodes)} of {robot['episodes_requested']} episodes finished"
    if episodes:
        listed = ", ".join(f"{r:.1f} (seed {s})" for r, s in zip(episodes, robot["episode_seeds"], strict=True))
        above = _above(robot["mean_return"], random_mean)
        robot_returns = f"{listed} (mean {robot['mean_return']:.1f}; {finished}); {above}"
    else:
        robot_returns = f"none finished within {robot['elapsed_s']:.0f} s"
    lat, jit = loop["latency"], loop["jitter"]
    misses = f"{loop['misses']} of {loop['steps']} ticks ({_counts(loop['miss_reasons'])}); overruns {loop['overruns']}"
    rows += [
        ("robot over ZeroMQ: episode returns", robot_returns),
        (
            "robot loop: achieved rate",
            f"{loop['achieved_hz']:.2f} Hz (target {robot['rate_hz']:.4g} Hz), {loop['steps']} ticks in "
            f"{robot['elapsed_s']:.1f} s",
        ),
        (
            "robot loop: latency, tick to action",
            f"p50 {_num(lat['p50_ms'])} ms, p99 {_num(lat['p99_ms'])} ms, max {_num(lat['max_ms'])} ms "
            f"(deadline {robot['deadline_ms']:.1f} ms)",
        ),
        ("robot loop: deadline misses", misses),
        ("robot loop: jitter", f"p50 {_num(jit['p50_ms'], 3)} ms, p99 {_num(jit['p99_ms'], 3)} ms"),
        (
            "server: act latency",
            f"p50 {_num(robot['server']['latency']['p50_ms'])} ms, p99 {_num(robot['server']['latency']['p99_ms'])} ms",
        ),
        ("stage times", ", ".join(_stage(name, info) for name, info in report["stages"].items()) or "n/a"),
    ]
    lines = ["| demo report | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]
    lines += ["| artifact | path |", "|---|---|"]
    for name, info in report["artifacts"].items():
        missing = "" if info["exists"] or name.startswith("demo_report") else " (missing)"
        lines.append(f"| {ARTIFACT_NAMES.get(name, name)} | {info['path']}{missing} |")
    return "\n".join(lines)


def _above(value: float, random_mean: float) -> str:
    """How far a return is above random actions' (a ratio too, where both are positive)."""
    ratio = ""
    if value > 0 and random_mean > 0:
        times = value / random_mean
        ratio = f", {times:.1f}x" if times < 10 else f", {times:.0f}x"
    return f"{value - random_mean:+.1f} vs random{ratio}"


def _pct(value: dict[str, Any] | None) -> str:
    if value is None:
        return "n/a (teacher no better than random, or its return not positive)"
    ci = value["ci"]
    return f"{100 * value['value']:.1f}% [{100 * ci['low']:.1f}%, {100 * ci['high']:.1f}%]"


def _ms(value: list[float] | None) -> str:
    return "not timed" if value is None else f"p50 {value[0]:.3f} ms, p99 {value[1]:.3f} ms"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


def _stage(name: str, info: dict[str, Any]) -> str:
    resumed = " (resumed)" if info.get("resumed") else ""
    return f"{name} {info['seconds']:.0f} s{resumed}"
