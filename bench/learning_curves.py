"""Evaluation return against environment steps for frozen-timm pixels, from-scratch pixels and state.

Methods: ``frozen`` (frozen-timm pixels without augmentation, ``--sac.feature-shift 0``; the default
until 2026-12-01, and the run directories of that name), ``frozen-shift`` (the same with DrQ's random
shift of the stored feature maps by one cell: today's default), ``frozen-shift-half`` (that on
DrQ-v2's schedule, one update every second step), ``scratch`` (the DrQ-v2 encoder trained end to end)
and ``state``; and issue 16's levers on top of ``frozen-shift-half``: ``frozen-half`` (no feature
shift), ``-n3`` (n-step 3), ``-lite2`` (EfficientNet-Lite2), ``-stage3`` (a later stage), ``-flare``
(FLARE's neck) and ``-pieg`` (PIE-G's BatchNorm statistics).

A thin user of ``agent-runtime sweep`` (``train.sweep``): every (task, method, seed) is a trial there,
a run directory ``<out>/<task>-<method>-s<seed>``, trained on Ray Tune as many at a time as the
machine's CPUs allow (``--threads`` each), finished ones reused and unfinished ones resumed; a run
that has evaluated at the asked steps already is reused as it is, even unfinished (e.g. on its way
to a larger budget). A run whose directory is gone (another machine) but whose curve kept in the
repository (``bench.curve_records``) reaches the asked steps is not trained again; every run this
trains or resumes leaves its curve there, as far as it got, even when stopped (Ctrl-C or SIGTERM).
A run directory or kept curve that evaluates otherwise than asked is refused for training (reported
with a warning under ``--report-only``); a seed, task or method given twice is refused.

Then the table and a PNG of the curves (``train.curves``): across seeds, the interquartile mean (IQM)
with rliable's stratified bootstrap 95% interval beside the plain mean; each seed's point is the mean
of its periodic evaluation's episodes (``--eval-episodes`` held-out seeds), at every ``--at`` step and
the last one.

Targets (issue 3): inverted_pendulum from pixels >= 900 within 30k steps; reacher from pixels >= -8
within 100k steps.

Usage: python bench/learning_curves.py --task inverted_pendulum:30000 --method frozen state --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from agent_runtime.interrupts import raise_keyboard_interrupt, stop_signals
from bench.curve_records import CONFIG_NAME, RECORDS, load_record, record_path, save_record
from train.config import TrainConfig
from train.curves import Curve, markdown, plot, rows
from train.overrides import Override
from train.sweep import Trial, curve_of, train_all, trial_config
from train.sweep_config import Setting

log = logging.getLogger(__name__)

METHODS: dict[str, tuple[Override, ...]] = {
    "frozen": (("sac.feature_shift", "0"),),
    "frozen-shift": (("sac.feature_shift", "1"),),
    # DrQ-v2's schedule (one update every second agent step) on today's default: the same updates per
    # frame as DrQ-v2, so a comparison at equal frames is also one at equal updates.
    "frozen-shift-half": (("sac.feature_shift", "1"), ("updates_per_step", "0.5")),
    # Issue 16's levers, each on top of frozen-shift-half: n-step 3 (DrQ-v2's), a larger offline
    # encoder (EfficientNet-Lite2, PIE-G's idea of a bigger ImageNet model cut early), a later stage,
    # FLARE's latent flow.
    # ... and the feature shift taken away (the lever "feature shift", read backwards).
    "frozen-half": (("sac.feature_shift", "0"), ("updates_per_step", "0.5")),
    "frozen-shift-half-n3": (("sac.feature_shift", "1"), ("updates_per_step", "0.5"), ("n_step", "3")),
    "frozen-shift-half-lite2": (
        ("sac.feature_shift", "1"),
        ("updates_per_step", "0.5"),
        ("encoder.name", "tf_efficientnet_lite2"),
    ),
    "frozen-shift-half-stage3": (("sac.feature_shift", "1"), ("updates_per_step", "0.5"), ("encoder.stage", "3")),
    # FLARE: the neck sees each frame's latent map beside the differences between frames.
    "frozen-shift-half-flare": (("sac.feature_shift", "1"), ("updates_per_step", "0.5"), ("neck", "flare")),
    # PIE-G: the encoder's stage 2 runs in every update, its BatchNorm statistics following the batches.
    "frozen-shift-half-pieg": (
        ("sac.feature_shift", "1"),
        ("updates_per_step", "0.5"),
        ("update_bn_statistics", "true"),
    ),
    "scratch": (("representation", "scratch"),),
    "state": (("representation", "state"),),
}
"""Method name -> the training settings it changes (run directories are named ``<task>-<method>-s<seed>``)."""

Key = tuple[str, str]
"""(task, method)."""


def run_config(
    out: Path, task: str, steps: int, method: str, seed: int, eval_every: int, threads: int, eval_episodes: int
) -> TrainConfig:
    """The run of one (task, method, seed): a sweep trial with the benchmark's evaluation settings."""
    base = TrainConfig(
        steps=steps,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        # The curve is the periodic evaluations; a final one of 100 episodes would cost more than the
        # run's learning on the short budgets here.
        final_eval_episodes=eval_episodes,
        video=False,
        checkpoint_every=eval_every,
        threads=threads,
        device="cpu",  # the trials reserve CPUs only; none may take a GPU unreserved
    )
    return trial_config(Trial(task, Setting(method, METHODS[method]), seed), base, out)


def _mismatch(saved: dict[str, Any], cfg: TrainConfig, where: Path) -> str | None:
    """What differs between how a run (its saved config) evaluates and how ``cfg`` asks; ``None`` if nothing."""
    theirs = (saved.get("eval_every"), saved.get("eval_episodes"))
    if theirs == (cfg.eval_every, cfg.eval_episodes):
        return None
    return (
        f"{where} evaluates every {theirs[0]} agent steps on {theirs[1]} episodes, this benchmark every "
        f"{cfg.eval_every} on {cfg.eval_episodes}: the curves would not compare (the DMC benches' --eval-every "
        "counts simulator frames, 2 per agent step)"
    )


def _covers(record: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether a kept curve reaches ``cfg``'s steps (finished there or not), evaluated as ``cfg`` asks."""
    return int(record["steps"]) >= cfg.target_steps and _mismatch(record["config"], cfg, Path()) is None


def _reaches(run_dir: Path, cfg: TrainConfig) -> Curve | None:
    """The curve of the run in ``run_dir`` if it evaluated at ``cfg``'s steps or later, else ``None``."""
    curve = curve_of(run_dir)
    return curve if curve is not None and curve[-1][0] >= cfg.target_steps else None


def _check_evaluations(cfg: TrainConfig, record: dict[str, Any] | None, records: Path | None, train: bool) -> None:
    """Refuse (``train``) or warn of a run directory, else a kept record, that evaluates otherwise than ``cfg``.

    Raises:
        ValueError: naming the directory or record and the fix, when ``train`` is on.
    """
    config_path = cfg.run_dir / CONFIG_NAME
    if config_path.is_file():
        problem = _mismatch(json.loads(config_path.read_text()), cfg, cfg.run_dir)
        fix = "use another --out, or the run's own settings"
    elif record is not None and records is not None and not cfg.run_dir.exists():
        problem = _mismatch(record["config"], cfg, record_path(records, cfg.run_dir.name))
        fix = "use the record's own settings, or delete the record (its curve is lost) to train the run again"
    else:
        return
    if problem is None:
        return
    if train:  # a curve trained on would not be comparable, and would not be kept over a longer record
        raise ValueError(f"{problem}; {fix}")
    log.warning("%s; reported as it is", problem)


def learning_curves(
    out: Path,
    tasks: list[tuple[str, int]],
    methods: list[str],
    seeds: list[int],
    eval_every: int,
    train: bool,
    threads: int,
    eval_episodes: int = 5,
    records: Path | None = RECORDS,
) -> dict[Key, list[Curve]]:
    """Each (task, method)'s curves over ``seeds``, training (or resuming) in one sweep the runs not finished.

    A run's curve comes from its directory in ``out`` when there is one, else from its record in
    ``records`` (``None`` for none). With ``train`` off, runs are reported as far as they got. With it
    on, a run finished at fewer steps than its task's is resumed from its checkpoint, or trained again
    from the start when only its record is left.
    """
    named: tuple[tuple[str, list[str]], ...] = (
        ("tasks", [task for task, _ in tasks]), ("methods", methods), ("seeds", [str(seed) for seed in seeds])
    )  # fmt: skip
    for name, given in named:
        twice = sorted({v for v in given if given.count(v) > 1})
        if twice:
            raise ValueError(f"{name} {', '.join(twice)} given more than once: each would count twice")
    kept: dict[tuple[str, str, int], Curve] = {}
    todo: list[tuple[tuple[str, str, int], TrainConfig]] = []
    for task, steps in tasks:
        for method in methods:
            for seed in seeds:
                cfg = run_config(out, task, steps, method, seed, eval_every, threads, eval_episodes)
                record = load_record(records, cfg.run_dir.name) if records is not None else None
                _check_evaluations(cfg, record, records, train)
                here = cfg.run_dir.exists()
                if not train or (not here and record is not None and _covers(record, cfg)):
                    curve = curve_of(cfg.run_dir) if here else None
                    if curve is None and record is not None:
                        log.info("%s: the curve kept in %s (%d steps)", cfg.run_dir.name, records, record["steps"])
                        curve = record["evals"]
                    if curve is not None:
                        kept[(task, method, seed)] = curve
                    continue
                reached = _reaches(cfg.run_dir, cfg) if here else None
                if reached is not None:  # got this far already (perhaps on its way to more steps)
                    kept[(task, method, seed)] = reached
                    continue
                todo.append(((task, method, seed), cfg))
    try:
        with stop_signals(raise_keyboard_interrupt):  # SIGTERM (a job's or a session's end) unwinds like Ctrl-C
            train_all([cfg for _, cfg in todo], cpus_per_trial=float(threads))
    finally:  # every run keeps its curve so far, even when a trial failed or the sweep was stopped
        for key, cfg in todo:
            curve = curve_of(cfg.run_dir)
            if curve is None:
                continue
            kept[key] = curve
            if records is not None:
                try:
                    save_record(cfg.run_dir, records)
                except ValueError as error:  # a longer or a damaged record: left as it is, named
                    log.warning("%s", error)
    return {(t, m): [kept[(t, m, s)] for s in seeds if (t, m, s) in kept] for t, _ in tasks for m in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=["inverted_pendulum:30000"], help="preset:steps")
    parser.add_argument("--method", nargs="+", default=["frozen", "scratch", "state"], choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per periodic evaluation")
    parser.add_argument("--at", nargs="*", type=int, default=[], help="steps to tabulate besides the last")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (and Ray CPUs) per run")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-learning"))
    parser.add_argument("--records", type=Path, default=RECORDS, help="where the curves kept in the repository are")
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; report the runs in --out as far as they got"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tasks = [(task, int(steps)) for task, steps in (spec.split(":") for spec in args.task)]
    try:
        found = learning_curves(
            args.out, tasks, args.method, args.seeds, args.eval_every, not args.report_only, args.threads,
            args.eval_episodes, args.records,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as error:  # what the user gave: named in one line
        parser.error(str(error))
    table = []
    for task, _ in tasks:
        series = {method: found[(task, method)] for method in args.method if found[(task, method)]}
        for method, curves in series.items():
            table += rows(task, method, curves, args.at)
        if series:
            print(f"plot: {plot(series, args.out / f'learning_curves_{task}.png', task)}")
    print(markdown(table, args.eval_episodes))


if __name__ == "__main__":
    main()
