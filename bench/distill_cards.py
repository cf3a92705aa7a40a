"""The distillation report card for one or more teacher runs, side by side in one run.

Each teacher is distilled with the default settings (conv student, DAgger with behaviour cloning as
the baseline); the cards are printed as one table, one column per teacher, with the issue's targets.
Student runs that already hold a report are reused.

Targets (issue 4): retention >= 95%; student >= 20x fewer parameters than the teacher (encoder
included); student single-sample latency >= 20x lower; DAgger ahead of behaviour cloning. Issue 15:
the student's failure rate within 1 percentage point of the teacher's on the same held-out episodes.

Usage: python -m bench.distill_cards --teachers runs/teacher-pendulum runs/teacher-reacher [--out runs/bench-distill]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from distill.config import DistillConfig
from distill.runner import REPORT_NAME, run
from train.score_text import failure_text, returns_text


def card(teacher: Path, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    run_dir = out / teacher.name
    report = run_dir / REPORT_NAME
    if report.exists():
        return dict(json.loads(report.read_text()))
    return run(dataclasses.replace(DistillConfig(teacher=teacher, run_dir=run_dir), **overrides))


def _pct(value: dict[str, Any] | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value['value']:.1f}% [{100 * value['ci']['low']:.1f}, {100 * value['ci']['high']:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", type=Path, required=True, help="teacher run directories")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-distill"))
    parser.add_argument("--iterations", type=int, default=DistillConfig.iterations)
    parser.add_argument("--steps-per-iteration", type=int, default=DistillConfig.steps_per_iteration)
    parser.add_argument("--updates-per-iteration", type=int, default=DistillConfig.updates_per_iteration)
    parser.add_argument("--eval-episodes", type=int, default=DistillConfig.eval_episodes)
    parser.add_argument("--threads", type=int, default=DistillConfig.threads, help="torch CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        "iterations": args.iterations,
        "steps_per_iteration": args.steps_per_iteration,
        "updates_per_iteration": args.updates_per_iteration,
        "eval_episodes": args.eval_episodes,
        "threads": args.threads,
    }
    cards = [card(teacher, args.out, overrides) for teacher in args.teachers]

    def row(name: str, target: str, value: Any) -> str:
        return f"| {name} | " + " | ".join(value(c) for c in cards) + f" | {target} |"

    def of(c: dict[str, Any], key: str) -> dict[str, Any]:
        return dict(c["students"][key] if key in ("dagger", "bc") else c[key])

    def ret(key: str) -> Any:
        return lambda c: returns_text(of(c, key)["stats"])

    def fails(key: str) -> Any:
        return lambda c: failure_text(of(c, key)["stats"])

    def mean(c: dict[str, Any], key: str) -> float:
        return float(of(c, key)["stats"]["mean"])

    lines = [
        "| | " + " | ".join(c["preset"] for c in cards) + " | target |",
        "|---|" + "---:|" * len(cards) + "---|",
        row("held-out episodes (same seeds for all)", "", lambda c: str(len(c["seeds"]))),
        row("failure criterion", "", lambda c: str(c["failure_criterion"])),
        row("random actions: return", "", ret("random")),
        row("teacher: return", "", ret("teacher")),
        row("teacher: failures", "", fails("teacher")),
        row("student, DAgger: return", "", ret("dagger")),
        row("student, DAgger: failures", "within 1 pp of the teacher", fails("dagger")),
        row("student, behaviour cloning: return", "", ret("bc")),
        row("student, behaviour cloning: failures", "", fails("bc")),
        row("retention (student / teacher)", ">= 95%", lambda c: _pct(c["retention"]["dagger"])),
        row("retention ((s - random) / (t - random))", "", lambda c: _pct(c["normalized_retention"]["dagger"])),
        row(
            "DAgger - BC (return)",
            "> 0",
            lambda c: f"{mean(c, 'dagger') - mean(c, 'bc'):+.1f}",
        ),
        row("parameters, teacher (encoder included)", "", lambda c: f"{c['teacher_parameters']:,}"),
        row("parameters, student", "", lambda c: f"{c['student_parameters']:,}"),
        row("compression", ">= 20x", lambda c: f"{c['compression']:.1f}x"),
        row("latency p50 / p99, teacher (ms)", "", lambda c: "{:.3f} / {:.3f}".format(*c["teacher_latency_ms"])),
        row("latency p50 / p99, student (ms)", "", lambda c: "{:.3f} / {:.3f}".format(*c["student_latency_ms"])),
        row("speed-up (p50)", ">= 20x", lambda c: f"{c['speedup']:.1f}x"),
        row("parity, max |onnxruntime - torch|", "<= 1e-4", lambda c: f"{c['parity_max_abs_diff']:.1e}"),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
