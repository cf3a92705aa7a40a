"""Our pixel teachers on the DeepMind Control Suite against DrQ-v2's released learning curves.

Trains (or resumes, or reuses) one run per task and seed with ``bench.learning_curves`` (its run
directories, ``--out``, and the curves kept in the repository, ``bench.curve_records``), then puts
each task's evaluation return against simulator frames beside DrQ-v2's (``../shared/anchors/drqv2``:
8-10 seeds per task, one evaluation of 10 episodes every 20k frames). Frames are simulator frames:
one agent step is 2 frames (action repeat 2), for both.

The protocol is DrQ-v2's where ours can follow it: 84x84 RGB, 3 frames, action repeat 2, batch 256,
one update every second agent step (method ``frozen-shift-half``: today's default trainer on
DrQ-v2's schedule, so both sides make the same number of updates per frame), an evaluation of 10
episodes every 20k frames. What differs is the learner: a frozen pretrained encoder with SAC
(n-step 1, 1,000 random steps first) against DrQ-v2's encoder trained end to end with DDPG (n-step
3, 2,000 random steps).

At each ``--frames`` budget the table gives, for ours and for DrQ-v2, every seed's value (the last
evaluation at or before the budget), the mean, and the IQM with rliable's stratified bootstrap 95%
interval (``train.stats.across_seeds_iqm``), computed the same way for both; and the ratio of the
means. A seed whose run has not reached a budget is left out of that row, and the row says how many
seeds it has (DrQ-v2's runs end at 980k frames, one evaluation short of 1M: they count at 1M, as
the anchors' README counts them). One PNG: a panel per task, each of our seeds' curves against DrQ-v2's mean and its
min..max band over seeds.

Targets (issue 16): ours >= DrQ-v2's mean at 100k frames on at least 4 of the 6 tasks, and at 500k
frames on at least 3.

Usage: python -m bench.dmc_vs_drqv2 --tasks dmc_cartpole_swingup dmc_cheetah_run --seeds 0 1 2 --max-frames 100000
"""

from __future__ import annotations

import argparse
import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.curve_records import RECORDS
from bench.learning_curves import METHODS, learning_curves
from train.stats import across_seeds_iqm

TASKS = ("dmc_cartpole_swingup", "dmc_reacher_easy", "dmc_cheetah_run", "dmc_walker_walk", "dmc_finger_spin",
         "dmc_cup_catch")  # fmt: skip
ACTION_REPEAT = 2
"""Simulator frames per agent step, for DrQ-v2 and for our DMC presets alike."""
ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "drqv2"
ANCHOR_EVAL_EVERY = 20_000
"""Frames between DrQ-v2's evaluations."""

Curve = list[tuple[float, float]]
"""(frames, evaluation return), frames ascending."""


@dataclass(frozen=True)
class Row:
    """One task at one frame budget: ours and DrQ-v2's per-seed values."""

    task: str
    frames: int
    ours: tuple[float, ...]
    theirs: tuple[float, ...]


def anchor_curves(task: str, anchors: Path = ANCHORS) -> dict[int, Curve]:
    """DrQ-v2's curve of each seed for our preset ``task`` (its file is ``<task>.csv``)."""
    path = anchors / f"{task}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no DrQ-v2 curves for {task}: {path} is missing (anchors directory: --anchors)")
    seeds: dict[int, Curve] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("seed", "frame", "episode_reward") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} has no column {', '.join(missing)}; it is not one of DrQ-v2's curve files")
        for row in reader:
            seeds.setdefault(int(row["seed"]), []).append((float(row["frame"]), float(row["episode_reward"])))
    if not seeds:
        raise ValueError(f"{path} holds no evaluations")
    return {seed: sorted(points) for seed, points in seeds.items()}


def our_curves(evals: list[list[list[float]]]) -> list[Curve]:
    """Our runs' periodic evaluations (agent step, mean return, std) as curves against frames."""
    return [[(step * ACTION_REPEAT, mean) for step, mean, *_ in run] for run in evals]


def value_at(curve: Curve, frames: int, grace: int = 0) -> float | None:
    """The last evaluation at or before ``frames``; ``None`` if the run had not got that far.

    A run has got that far when it evaluated at ``frames - grace`` or later (an unfinished run is not
    counted at a budget it has not reached, even if its last evaluation is the latest before it). Ours
    evaluate at the end of a run (``grace`` 0); DrQ-v2's runs stop at 1M frames without evaluating
    there, their last evaluation at 980k, so its seeds are read with ``grace`` one evaluation interval
    (``ANCHOR_EVAL_EVERY``), as the anchors' README tabulates them.
    """
    if not curve or curve[-1][0] < frames - grace:
        return None
    before = [ret for at, ret in curve if at <= frames]
    return before[-1] if before else None


def rows(ours: dict[str, list[Curve]], theirs: dict[str, dict[int, Curve]], budgets: list[int]) -> list[Row]:
    """Each task at each budget; a side with no seed at a budget has an empty tuple."""
    out = []
    for task in ours:
        for frames in budgets:
            mine = tuple(v for c in ours[task] if (v := value_at(c, frames)) is not None)
            drq = tuple(v for c in theirs[task].values() if (v := value_at(c, frames, ANCHOR_EVAL_EVERY)) is not None)
            out.append(Row(task, frames, mine, drq))
    return out


def _summary(values: tuple[float, ...]) -> str:
    if not values:
        return "not reached"
    point, ci = across_seeds_iqm(np.array(values))
    return f"{np.mean(values):.1f}; IQM {point:.1f} [{ci.low:.1f}, {ci.high:.1f}] ({len(values)} seeds)"


def table(result: list[Row]) -> str:
    """The comparison as a markdown table."""
    lines = [
        "| task | frames | ours, per seed | ours: mean; IQM [95% CI] | DrQ-v2: mean; IQM [95% CI] "
        "| ours / DrQ-v2 (mean) |",
        "|---|---:|---|---|---|---:|",
    ]
    for r in result:
        seeds = ", ".join(f"{v:.1f}" for v in r.ours) or "-"
        ratio = f"{np.mean(r.ours) / np.mean(r.theirs):.2f}" if r.ours and r.theirs and np.mean(r.theirs) else "-"
        lines.append(
            f"| {r.task} | {r.frames:,} | {seeds} | {_summary(r.ours)} | {_summary(r.theirs)} | {ratio} |"
        )  # fmt: skip
    return "\n".join(lines)


def plot(ours: dict[str, list[Curve]], theirs: dict[str, dict[int, Curve]], png: Path) -> Path:
    """A panel per task: each of our seeds' curves; DrQ-v2's mean with its min..max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(ours))
    rows_ = -(-len(ours) // columns)
    figure, axes = plt.subplots(rows_, columns, figsize=(5 * columns, 3.6 * rows_), squeeze=False)
    for axis, task in zip(axes.flat, ours, strict=False):
        drq = list(theirs[task].values())
        length = min(len(c) for c in drq)
        x = np.array([p[0] for p in drq[0][:length]])
        y = np.array([[p[1] for p in c[:length]] for c in drq])
        axis.fill_between(x, y.min(0), y.max(0), alpha=0.15, color="grey")
        axis.plot(x, y.mean(0), color="grey", label=f"DrQ-v2 (mean, min..max of {len(drq)} seeds)")
        for i, curve in enumerate(ours[task]):
            axis.plot([p[0] for p in curve], [p[1] for p in curve], color="C0", alpha=0.8, linewidth=1,
                      label="ours, frozen timm + SAC (each seed)" if i == 0 else None)  # fmt: skip
        last = max((c[-1][0] for c in ours[task] if c), default=x[-1])
        axis.set_xlim(0, max(last, 100_000) * 1.05)
        axis.set_title(task)
        axis.set_xlabel("simulator frames")
        axis.set_ylabel("evaluation return")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(ours) :]:
        axis.set_visible(False)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--method", default="frozen-shift-half", choices=list(METHODS), help="what to train; default: DrQ-v2's schedule"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-frames", type=int, default=100_000, help="train each run to this many frames")
    parser.add_argument("--frames", nargs="+", type=int, default=[100_000, 500_000], help="budgets to tabulate")
    parser.add_argument("--eval-every", type=int, default=20_000, help="frames between evaluations (DrQ-v2: 20k)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (DrQ-v2: 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-dmc"))
    parser.add_argument("--anchors", type=Path, default=ANCHORS)
    parser.add_argument("--records", type=Path, default=RECORDS, help="where the curves kept in the repository are")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report runs as far as they got")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        theirs = {task: anchor_curves(task, args.anchors) for task in args.tasks}  # before hours of training
        found = learning_curves(
            args.out, [(task, args.max_frames // ACTION_REPEAT) for task in args.tasks], [args.method], args.seeds,
            args.eval_every // ACTION_REPEAT, not args.report_only, args.threads, args.eval_episodes, args.records,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as error:  # what the user gave: named in one line
        parser.error(str(error))
    ours = {task: our_curves(found[(task, args.method)]) for task in args.tasks}
    print(table(rows(ours, theirs, args.frames)))
    print(f"plot: {plot(ours, theirs, args.out / 'dmc_vs_drqv2.png')}")


if __name__ == "__main__":
    main()
