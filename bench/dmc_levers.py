"""Issue 16's levers, each against the default it changes, on the DMC tasks where ours lags DrQ-v2.

A lever is a method of ``bench.learning_curves`` that changes one thing of the base method
(``frozen-shift-half``: today's trainer on DrQ-v2's schedule): n-step 3, no feature shift
(``frozen-half``), a later stage, a larger encoder, FLARE's neck, PIE-G's BatchNorm statistics, or
the schedule itself (``frozen-shift``: one update per agent step). Each lever's run is paired with
the base's run of the same task and seed (the same environment and evaluation seeds), and the
table gives, at each frame budget, both returns and their difference, beside the range of the base
over ``--base-seeds``: a lever's gain is only worth reading where it leaves that range.

Lever runs are trained (or resumed, or reused) in ``--out`` as ``bench.dmc_vs_drqv2`` trains its
runs; the base runs are only read, from ``--base-out`` or the curves kept in the repository
(``bench.curve_records``): train them with ``bench.dmc_vs_drqv2``. A PNG per task shows the curves.

Usage: python -m bench.dmc_levers --tasks dmc_cartpole_swingup dmc_cheetah_run --methods frozen-shift-half-n3
    --seeds 0 --max-frames 100000 --threads 1
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from bench.curve_records import RECORDS
from bench.dmc_vs_drqv2 import ACTION_REPEAT, TASKS, our_curves, value_at
from bench.learning_curves import learning_curves
from train.curves import Curve, plot

BASE = "frozen-shift-half"
LEVERS = (
    "frozen-shift-half-n3",
    "frozen-half",
    "frozen-shift-half-stage3",
    "frozen-shift-half-lite2",
    "frozen-shift",
    "frozen-shift-half-flare",
    "frozen-shift-half-pieg",
)
"""Methods of ``bench.learning_curves``, each changing one thing of ``BASE``; the default order to train them."""
GPU_LEVER = "frozen-shift-half-pieg"
"""PIE-G's recipe runs the encoder's stage in every update: about 12 hours per 100k frames on one CPU core."""


@dataclass(frozen=True)
class Pair:
    """One lever on one task and seed at one frame budget, beside the base; ``None``: not reached."""

    task: str
    method: str
    seed: int
    frames: int
    lever: float | None
    base: float | None
    base_range: tuple[float, float] | None
    """The lowest and highest return of the base over ``--base-seeds`` and ``--seeds`` at ``frames``."""


def _by_seed(
    out: Path, task: str, method: str, seeds: list[int], steps: int, args: argparse.Namespace
) -> dict[int, Curve]:
    """Each seed's curve of (task, method) as far as it got (``train=False``: reads, never trains)."""
    found: dict[int, Curve] = {}
    for seed in seeds:
        curves = learning_curves(
            out, [(task, steps)], [method], [seed], args.eval_every // ACTION_REPEAT, False, args.threads,
            args.eval_episodes, args.records,
        )[(task, method)]  # fmt: skip
        if curves:
            found[seed] = curves[0]
    return found


def pairs(
    levers: dict[tuple[str, str], dict[int, Curve]], bases: dict[str, dict[int, Curve]], budgets: list[int]
) -> list[Pair]:
    """Every lever run that exists, at every budget, with its base of the same seed and the base's range."""
    out = []
    for (task, method), seeds in levers.items():
        for seed, curve in sorted(seeds.items()):
            for frames in budgets:
                lever = value_at(our_curves([curve])[0], frames)
                base_curve = bases[task].get(seed)
                base = value_at(our_curves([base_curve])[0], frames) if base_curve is not None else None
                spread = [v for c in bases[task].values() if (v := value_at(our_curves([c])[0], frames)) is not None]
                base_range = (min(spread), max(spread)) if spread else None
                out.append(Pair(task, method, seed, frames, lever, base, base_range))
    return out


def _fmt(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}"


def table(result: list[Pair]) -> str:
    """The pairs as a markdown table."""
    lines = [
        f"| task | lever (method) | seed | frames | lever | base ({BASE}), same seed | lever - base "
        "| base over its seeds (min..max) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in result:
        diff = f"{p.lever - p.base:+.1f}" if p.lever is not None and p.base is not None else "-"
        spread = f"{p.base_range[0]:.1f}..{p.base_range[1]:.1f}" if p.base_range else "-"
        values = f"{_fmt(p.lever)} | {_fmt(p.base)} | {diff} | {spread}"
        lines.append(f"| {p.task} | {p.method} | {p.seed} | {p.frames:,} | {values} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["dmc_cartpole_swingup", "dmc_cheetah_run"], choices=TASKS)
    cpu_levers = [m for m in LEVERS if m != GPU_LEVER]
    parser.add_argument(
        "--methods", nargs="+", default=cpu_levers, choices=LEVERS, help=f"levers to run; default: all but {GPU_LEVER}"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--base-seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the base's range (with --seeds)"
    )
    parser.add_argument("--max-frames", type=int, default=100_000, help="train each lever run to this many frames")
    parser.add_argument("--frames", nargs="+", type=int, default=[100_000], help="budgets to tabulate")
    parser.add_argument("--eval-every", type=int, default=20_000, help="frames between evaluations (DrQ-v2: 20k)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-levers"), help="the lever runs")
    parser.add_argument("--base-out", type=Path, default=Path("runs/bench-dmc"), help="the base runs (only read)")
    parser.add_argument("--records", type=Path, default=RECORDS, help="where the curves kept in the repository are")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report runs as far as they got")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    steps = args.max_frames // ACTION_REPEAT
    try:
        if not args.report_only:
            learning_curves(
                args.out, [(t, steps) for t in args.tasks], args.methods, args.seeds,
                args.eval_every // ACTION_REPEAT, True, args.threads, args.eval_episodes, args.records,
            )  # fmt: skip
        found = {(t, m): _by_seed(args.out, t, m, args.seeds, steps, args) for t in args.tasks for m in args.methods}
        bases = {t: _by_seed(args.base_out, t, BASE, sorted(set(args.base_seeds) | set(args.seeds)), steps, args)
                 for t in args.tasks}  # fmt: skip
    except (ValueError, FileNotFoundError) as error:  # what the user gave: named in one line
        parser.error(str(error))
    print(table(pairs(found, bases, args.frames)))
    for task in args.tasks:
        series = {BASE: [bases[task][s] for s in args.seeds if s in bases[task]]}
        series |= {m: list(found[(task, m)].values()) for m in args.methods if found[(task, m)]}
        series = {name: curves for name, curves in series.items() if curves}
        if series:
            print(f"plot: {plot(series, args.out / f'levers_{task}.png', task)}")


if __name__ == "__main__":
    main()
