"""Sweeps: a grid of training runs on Ray Tune, then their learning curves over seeds.

Each trial is one :func:`train.runner.run` in a Tune worker, with the resources the sweep reserves for
it, writing a normal run directory (``<out>/<preset>-<setting>-s<seed>``). A trial whose run finished
is kept as it is and one with a checkpoint resumes from it, so a sweep started again after an
interruption trains only what is left. Tune's own records go to ``<out>/tune``; the run directories
are the results. The report is :mod:`train.curves`' table per preset and setting, and plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.config import TrainConfig
from train.curves import Curve, CurveRow, markdown, plot, rows
from train.overrides import apply_overrides
from train.presets import get_preset, is_preset_file
from train.ray_actors import import_ray, ray_session
from train.run_files import CHECKPOINT_NAME, EVALS_NAME, SUMMARY_NAME
from train.sweep_config import Setting, SweepCommand

log = logging.getLogger(__name__)

TABLE_NAME = "curves.md"


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: a preset, a setting of the grid and a seed."""

    preset: str
    setting: Setting
    seed: int

    @property
    def name(self) -> str:
        """The run directory's name: ``<preset>-<setting label>-s<seed>`` (a preset file by its name)."""
        return f"{get_preset(self.preset).name}-{self.setting.label}-s{self.seed}"


def trials(cmd: SweepCommand) -> list[Trial]:
    """Every (preset, setting, seed) of the sweep, presets outermost."""
    return [Trial(p, s, seed) for p in cmd.presets for s in cmd.settings() for seed in cmd.seeds]


def trial_config(trial: Trial, base: TrainConfig, out: Path) -> TrainConfig:
    """The trial's training config: ``base`` with the trial's setting, preset, seed and run directory."""
    cfg = apply_overrides(base, trial.setting.overrides)
    # Absolute paths: Tune runs each trial in a working directory of its own.
    run_dir = (out / trial.name).resolve()
    preset = str(Path(trial.preset).resolve()) if is_preset_file(trial.preset) else trial.preset
    return dataclasses.replace(
        cfg, preset=preset, seed=trial.seed, run_dir=run_dir, resume=(run_dir / CHECKPOINT_NAME).exists()
    )


def finished(cfg: TrainConfig) -> bool:
    """Whether the run in ``cfg.run_dir`` finished at least ``cfg``'s steps."""
    summary = cfg.run_dir / SUMMARY_NAME
    return summary.is_file() and int(json.loads(summary.read_text())["steps"]) >= cfg.target_steps


def run_trial(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) one trial's run; a finished one is returned as it is."""
    from train.runner import run

    if finished(cfg):
        return dict(json.loads((cfg.run_dir / SUMMARY_NAME).read_text()))
    return run(cfg)


def _trial_name(train: dict[str, Any]) -> str:
    return Path(str(train.get("run_dir", "unknown"))).name


def _trainable(config: dict[str, Any]) -> None:
    """A Tune function trainable: one trial (its config as plain data), reported when it ends."""
    import os

    from ray import tune

    os.environ["TQDM_DISABLE"] = "1"  # progress goes to the run's log lines, not to bars in Ray's output

    from train.teacher import config_from_dict

    summary = run_trial(config_from_dict(TrainConfig, config["train"]))
    tune.report({"steps": summary["steps"], "final_return": summary["final_eval"]["mean"]})


def base_config(cmd: SweepCommand) -> TrainConfig:
    """What every trial shares: the sweep's fixed settings, its threads and its device."""
    threads = max(1, int(cmd.cpus_per_trial))
    base = apply_overrides(TrainConfig(), cmd.fixed())
    return dataclasses.replace(base, threads=threads, device="cuda" if cmd.gpus_per_trial > 0 else "cpu")


def run_sweep(cmd: SweepCommand) -> list[CurveRow]:
    """Train every trial not finished yet on Ray Tune, then write and return the table; see the module docstring."""
    if cmd.report_only:
        return report(cmd)
    configs = [trial_config(t, base_config(cmd), cmd.out) for t in trials(cmd)]
    try:
        train_all(configs, cmd.cpus_per_trial, cmd.gpus_per_trial, cmd.ray_address)
    finally:  # the table of what there is, also when a trial failed
        table = report(cmd)
    return table


def train_all(
    configs: list[TrainConfig], cpus_per_trial: float, gpus_per_trial: float = 0.0, ray_address: str | None = None
) -> None:
    """Train (or resume) every run of ``configs`` not finished yet, as trials on Ray Tune, as many at once as fit.

    Raises:
        RuntimeError: naming the trials that failed, with the first one's error.
    """
    from train.teacher import config_to_dict

    todo = [c for c in configs if not finished(c)]
    if not todo:
        return
    import_ray()
    from ray import tune

    log.info("sweep: %d of %d trials to train (the others finished)", len(todo), len(configs))
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    with ray_session(ray_address, len(todo), "trials"):
        tuner = tune.Tuner(
            tune.with_resources(_trainable, resources),
            param_space={"train": tune.grid_search([config_to_dict(c) for c in todo])},
            tune_config=tune.TuneConfig(trial_dirname_creator=lambda trial: _trial_name(trial.config["train"])),
            run_config=tune.RunConfig(name="sweep", storage_path=str(_tune_dir(todo)), verbose=0),
        )
        results = tuner.fit()
    failed = [results[i] for i in range(len(results)) if results[i].error is not None]
    if failed:
        names = ", ".join(_trial_name((r.config or {}).get("train", {})) for r in failed)
        raise RuntimeError(f"{len(failed)} trial(s) failed: {names}; first error: {failed[0].error}")


def _tune_dir(configs: list[TrainConfig]) -> Path:
    """Where Tune keeps its own records: ``tune`` beside the first trial's run directory."""
    return configs[0].run_dir.resolve().parent / "tune"


def curve_of(run_dir: Path) -> Curve | None:
    """A run's evaluations so far; ``None`` without any.

    The longer of ``summary.json``'s (a finished run's) and ``evals.json``'s (rewritten at every
    evaluation, so it is the longer one once a finished run is resumed toward a larger ``--steps``);
    the summary's when they end at the same step.
    """
    found: list[Curve] = []
    for name in (SUMMARY_NAME, EVALS_NAME):
        path = run_dir / name
        if path.is_file():
            evals: Curve = json.loads(path.read_text())["evals"]
            if evals:
                found.append(evals)
    return max(found, key=lambda evals: evals[-1][0]) if found else None


def report(cmd: SweepCommand) -> list[CurveRow]:
    """The table (``<out>/curves.md``) and plots (one per preset, one per preset and setting) of the trials."""
    table: list[CurveRow] = []
    for preset in cmd.presets:
        name = get_preset(preset).name
        series: dict[str, list[Curve]] = {}
        for setting in cmd.settings():
            found = [curve_of(cmd.out / Trial(preset, setting, seed).name) for seed in cmd.seeds]
            curves = [c for c in found if c is not None]
            if not curves:
                continue
            series[setting.label] = curves
            table += rows(name, setting.label, curves, list(cmd.at))
            plot({setting.label: curves}, cmd.out / f"{name}-{setting.label}.png", f"{name}, {setting.label}")
        if series:
            plot(series, cmd.out / f"{name}.png", name)
    episodes = apply_overrides(TrainConfig(), cmd.fixed()).eval_episodes
    text = markdown(table, episodes)
    cmd.out.mkdir(parents=True, exist_ok=True)
    (cmd.out / TABLE_NAME).write_text(text + "\n")
    return table
