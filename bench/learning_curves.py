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
from pathlib import Path

import numpy as np

from train.config import SACConfig, TrainConfig
from train.run_files import CHECKPOINT_NAME, SUMMARY_NAME
from train.runner import run
from train.stats import across_seeds_iqm

METHODS: dict[str, tuple[str, SACConfig]] = {
    "frozen": ("frozen", SACConfig(feature_shift=0)),
    "frozen-shift": ("frozen", SACConfig(feature_shift=1)),
    "scratch": ("scratch", SACConfig()),
    "state": ("state", SACConfig()),
}
"""Method name -> (representation, actor-critic settings)."""


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
) -> list[list[list[float]]]:
    """The evaluation curve of each seed's run, training (or resuming) the runs that are not finished.

    With ``train`` off, unfinished runs are reported as far as they got (their ``evals.json``); with it
    on, a run finished at fewer than ``steps`` is resumed to ``steps``.
    """
    representation, sac = METHODS[method]
    runs = []
    for seed in seeds:
        run_dir = out / f"{task}-{method}-s{seed}"
        summary_path = run_dir / SUMMARY_NAME
        if not train:
            source = summary_path if summary_path.exists() else run_dir / "evals.json"
            if source.exists():
                runs.append(json.loads(source.read_text())["evals"])
            continue
        finished = summary_path.exists() and json.loads(summary_path.read_text())["steps"] >= steps
        if not finished:  # a run finished at fewer steps is resumed and goes on to ``steps``
            cfg = TrainConfig(
                preset=task,
                representation=representation,  # type: ignore[arg-type]
                sac=sac,
                steps=steps,
                seed=seed,
                eval_every=eval_every,
                eval_episodes=eval_episodes,
                checkpoint_every=eval_every,
                run_dir=run_dir,
                threads=threads,
                resume=(run_dir / CHECKPOINT_NAME).exists(),
            )
            run(cfg)
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
                args.eval_episodes,
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
