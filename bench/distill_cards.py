"""The distillation report card for one or more teacher runs, side by side in one run.

Each teacher is distilled with the default settings (conv student, DAgger with behaviour cloning as
the baseline); the cards are printed as one table, one column per teacher, with the issue's targets.
Student runs that already hold a report are reused.

Targets (issue 4): retention >= 95%; student >= 20x fewer parameters than the teacher (encoder
included); student single-sample latency >= 20x lower; DAgger ahead of behaviour cloning.

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


def card(teacher: Path, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    run_dir = out / teacher.name
    report = run_dir / REPORT_NAME
    if report.exists():
        return dict(json.loads(report.read_text()))
    return run(dataclasses.replace(DistillConfig(teacher=teacher, run_dir=run_dir), **overrides))


def _ahead(card: dict[str, Any]) -> float:
    return float(card["students"]["dagger"]["mean"] - card["students"]["bc"]["mean"])


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", type=Path, required=True, help="teacher run directories")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-distill"))
    parser.add_argument("--iterations", type=int, default=DistillConfig.iterations)
    parser.add_argument("--steps-per-iteration", type=int, default=DistillConfig.steps_per_iteration)
    parser.add_argument("--updates-per-iteration", type=int, default=DistillConfig.updates_per_iteration)
    parser.add_argument("--threads", type=int, default=DistillConfig.threads, help="torch CPU threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        "iterations": args.iterations,
        "steps_per_iteration": args.steps_per_iteration,
        "updates_per_iteration": args.updates_per_iteration,
        "threads": args.threads,
    }
    cards = [card(teacher, args.out, overrides) for teacher in args.teachers]

    def row(name: str, target: str, value: Any) -> str:
        return f"| {name} | " + " | ".join(value(c) for c in cards) + f" | {target} |"

    def ret(key: str) -> Any:
        return lambda c: f"{c[key]['mean']:.1f} +- {c[key]['std']:.1f}"

    def student(method: str) -> Any:
        return lambda c: f"{c['students'][method]['mean']:.1f} +- {c['students'][method]['std']:.1f}"

    lines = [
        "| | " + " | ".join(c["preset"] for c in cards) + " | target |",
        "|---|" + "---:|" * len(cards) + "---|",
        row("random actions: return", "", ret("random")),
        row("teacher: return", "", ret("teacher")),
        row("student, DAgger: return", "", student("dagger")),
        row("student, behaviour cloning: return", "", student("bc")),
        row("retention (student / teacher)", ">= 95%", lambda c: _pct(c["retention"]["dagger"])),
        row("retention ((s - random) / (t - random))", "", lambda c: _pct(c["normalized_retention"]["dagger"])),
        row(
            "DAgger - BC (return)",
            "> 0",
            lambda c: f"{c['students']['dagger']['mean'] - c['students']['bc']['mean']:+.1f}",
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
