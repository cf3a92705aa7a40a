"""Evaluation return against environment steps for frozen-timm pixels, from-scratch pixels and state.

Methods: ``frozen`` (frozen-timm pixels without augmentation, ``--sac.feature-shift 0``; the default
until 2026-12-01, and the run directories of that name), ``frozen-shift`` (the same with DrQ's random
shift of the stored feature maps by one cell: today's default), ``scratch`` (the DrQ-v2 encoder trained
end to end) and ``state``.

Trains every (task, method, seed) given, one run after another, then writes a table and a PNG of the
curves. Across seeds both show the interquartile mean (IQM) with rliable's stratified bootstrap 95%
interval (``train.stats.across_seeds_iqm``) beside the plain mean; each seed's point is the mean of
its periodic evaluation's episodes (``--eval-episodes`` held-out seeds). The table gives every
``--at`` step and the last one. Runs that exist in --out with a summary.json are reused, so the
benchmark can be built up over several sessions.

Targets (issue 3): inverted_pendulum from pixels >= 900 within 30k steps; reacher from pixels >= -8
within 100k steps.

Usage: python bench/learning_curves.py --task inverted_pendulum:30000 --method frozen state --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.curve_records import EVALS_NAME, RECORDS, load_record, save_record
from models.policy_kinds import Representation
from train.config import SACConfig, TrainConfig
from train.run_files import CHECKPOINT_NAME, SUMMARY_NAME
from train.runner import run
from train.stats import across_seeds_iqm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """What a method name trains: the representation and the settings that differ from the defaults."""

    representation: Representation
    sac: SACConfig = field(default_factory=SACConfig)
    updates_per_step: float = 1.0


METHODS: dict[str, Method] = {
    "frozen": Method("frozen", SACConfig(feature_shift=0)),
    "frozen-shift": Method("frozen", SACConfig(feature_shift=1)),
    # DrQ-v2's schedule (one update every second agent step) on today's default: the same updates per
    # frame as DrQ-v2, so a comparison at equal frames is also one at equal updates.
    "frozen-shift-half": Method("frozen", SACConfig(feature_shift=1), updates_per_step=0.5),
    "scratch": Method("scratch"),
    "state": Method("state"),
}
"""Method name -> what it trains (run directories are named ``<task>-<method>-s<seed>``)."""


def _covers(record: dict[str, Any], steps: int) -> bool:
    """Whether a kept curve is of a run that finished at ``steps`` or more."""
    return bool(record["finished"]) and int(record["steps"]) >= steps


def curves(
    out: Path,
    task: str,
    steps: int,
    method: str,
    seeds: list[int],
    eval_every: int,
    train: bool,
    threads: int,
    eval_episodes: int = 5,
    records: Path | None = RECORDS,
) -> list[list[list[float]]]:
    """The evaluation curve of each seed's run, training (or resuming) the runs that are not finished.

    A run's curve comes from its directory in ``out`` when there is one, else from its record in
    ``records`` (``bench.curve_records``: the curves kept in the repository, ``None`` for none). With
    ``train`` off, unfinished runs are reported as far as they got. With it on, a run finished at
    fewer than ``steps`` is resumed to ``steps`` from its checkpoint, or trained again from the start
    when only its record is left; every run trained here leaves its record.
    """
    chosen = METHODS[method]
    runs = []
    for seed in seeds:
        run_dir = out / f"{task}-{method}-s{seed}"
        summary_path = run_dir / SUMMARY_NAME
        record = load_record(records, run_dir.name) if records is not None else None
        if not train:
            source = summary_path if summary_path.exists() else run_dir / EVALS_NAME
            if source.exists():
                runs.append(json.loads(source.read_text())["evals"])
            elif record is not None:
                runs.append(record["evals"])
            continue
        finished = summary_path.exists() and json.loads(summary_path.read_text())["steps"] >= steps
        # A run trained on an earlier machine: its kept curve is all the table needs.
        if not finished and not run_dir.exists() and record is not None and _covers(record, steps):
            log.info("%s: the curve kept in %s (%d steps)", run_dir.name, records, record["steps"])
            runs.append(record["evals"])
            continue
        if not finished:  # a run finished at fewer steps is resumed and goes on to ``steps``
            cfg = TrainConfig(
                preset=task,
                representation=chosen.representation,
                sac=chosen.sac,
                updates_per_step=chosen.updates_per_step,
                steps=steps,
                seed=seed,
                eval_every=eval_every,
                eval_episodes=eval_episodes,
                # The curve is the periodic evaluations; a final one of 100 episodes would cost more
                # than the run's learning on the short budgets here.
                final_eval_episodes=eval_episodes,
                video=False,
                checkpoint_every=eval_every,
                run_dir=run_dir,
                threads=threads,
                resume=(run_dir / CHECKPOINT_NAME).exists(),
            )
            run(cfg)
        if records is not None:
            save_record(run_dir, records)
        runs.append(json.loads(summary_path.read_text())["evals"])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=["inverted_pendulum:30000"], help="preset:steps")
    parser.add_argument("--method", nargs="+", default=["frozen", "scratch", "state"], choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per periodic evaluation")
    parser.add_argument("--at", nargs="*", type=int, default=[], help="steps to tabulate besides the last")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-learning"))
    parser.add_argument("--records", type=Path, default=RECORDS, help="where the curves kept in the repository are")
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; report the runs in --out as far as they got"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    figure, axes = plt.subplots(1, len(args.task), figsize=(6 * len(args.task), 4), squeeze=False)
    for axis, spec in zip(axes[0], args.task, strict=True):
        task, steps = spec.split(":")
        for method in args.method:
            runs = curves(
                args.out, task, int(steps), method, args.seeds, args.eval_every, not args.report_only, args.threads,
                args.eval_episodes, args.records,
            )  # fmt: skip
            if not runs:
                continue
            length = min(len(r) for r in runs)
            x = np.array([runs[0][i][0] for i in range(length)])
            y = np.array([[r[i][1] for i in range(length)] for r in runs])
            band = [across_seeds_iqm(y[:, i], resamples=1_000) for i in range(length)]
            line = axis.plot(x, [b[0] for b in band], label=f"{method} (IQM, {len(runs)} seeds)")[0]
            axis.fill_between(x, [b[1].low for b in band], [b[1].high for b in band], alpha=0.2, color=line.get_color())
            axis.plot(x, y.mean(0), linestyle="--", linewidth=1, color=line.get_color())
            wanted = sorted({int(s) for s in args.at if s <= x[-1]} | {int(x[-1])})
            for step in wanted:
                i = int(np.searchsorted(x, step))
                point, ci = across_seeds_iqm(y[:, i])
                rows.append((task, method, len(runs), int(x[i]), y[:, i].mean(), point, ci))
        axis.set_title(f"{task}: IQM over seeds, 95% bootstrap band; dashed: mean")
        axis.set_xlabel("environment steps")
        axis.set_ylabel("evaluation return")
        axis.legend()
    figure.tight_layout()
    png = args.out / "learning_curves.png"
    figure.savefig(png, dpi=100)
    episodes = args.eval_episodes
    print(f"| task | method | seeds ({episodes} episodes each) | step | mean over seeds | IQM [95% CI] |")
    print("|---|---|---:|---:|---:|---:|")
    for task, method, n, step, mean, point, ci in rows:
        print(f"| {task} | {method} | {n} | {step} | {mean:.1f} | {point:.1f} [{ci.low:.1f}, {ci.high:.1f}] |")
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
