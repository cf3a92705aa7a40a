"""Configuration of ``agent-runtime sweep``: a frozen dataclass, importable without torch or Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from train.config import TrainConfig
from train.overrides import Override, apply_overrides, parse_grid
from train.presets import DEFAULT_PRESET


@dataclass(frozen=True)
class Setting:
    """One grid point: its label (as run directories and tables name it) and its settings."""

    label: str
    overrides: tuple[Override, ...]


def label_of(overrides: tuple[Override, ...]) -> str:
    """``sac.feature_shift=0,n_step=3``, or ``default`` for no settings; safe in a directory name."""
    if not overrides:
        return "default"
    text = ",".join(f"{path}={value}" for path, value in overrides)
    return "".join(c if c.isalnum() or c in "._=,+-" else "_" for c in text)


@dataclass(frozen=True)
class SweepCommand:
    """Train a grid of runs on Ray Tune (presets x seeds x --set values), then tabulate and plot their curves.

    Every trial is a normal run directory, OUT/<preset>-<setting>-s<seed>: a sweep started again keeps
    the trials that finished and resumes the others from their last checkpoints.
    """

    presets: tuple[str, ...] = (DEFAULT_PRESET,)
    """Task presets (names or preset files)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds: each setting of each preset is trained once per seed."""
    set: tuple[str, ...] = ()
    """Training settings as FIELD=VALUE (every trial) or FIELD=V1,V2 (a grid axis), with train's field
    names: e.g. steps=10000 eval_every=2500 sac.feature_shift=0,1 updates_per_step=0.5,1."""
    out: Path = Path("runs/sweep")
    """Directory of the trials' run directories, the table (curves.md) and the plots."""
    cpus_per_trial: float = 2.0
    """CPUs Ray reserves for each trial (the trial's torch threads: this, rounded down, at least 1)."""
    gpus_per_trial: float = 0.0
    """GPUs (or a fraction of one) Ray reserves for each trial; with any, trials train on CUDA."""
    ray_address: str | None = None
    """Ray cluster to run the trials on (e.g. auto, head:6379 or ray://head:10001); unset: RAY_ADDRESS if
    set, else a cluster started on this node with `ray start`, else a new local instance with the CPUs Ray
    detects."""
    at: tuple[int, ...] = ()
    """Steps to tabulate besides each setting's last evaluation."""
    report_only: bool = False
    """Train nothing: tabulate and plot the trials in --out as far as they got."""

    def __post_init__(self) -> None:
        if not self.presets:
            raise ValueError("presets is empty; name at least one preset")
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed")
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise ValueError(f"cpus_per_trial is {self.cpus_per_trial}; it must be positive")
        if not (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise ValueError(f"gpus_per_trial is {self.gpus_per_trial}; it must not be negative")
        for name in ("preset", "seed", "run_dir", "resume"):
            if any(item.split("=", 1)[0].strip() == name for item in self.set):
                raise ValueError(f"--set {name}: the sweep sets {name} itself (--presets, --seeds, --out)")
        for name, flag in (("threads", "--cpus-per-trial"), ("device", "--gpus-per-trial")):
            if any(item.split("=", 1)[0].strip() == name for item in self.set):
                raise ValueError(f"--set {name}: the sweep sets each trial's {name} from {flag}; use that instead")
        if any(item.split("=", 1)[0].strip() in ("collectors", "ray_address") for item in self.set):
            raise ValueError(
                "--set collectors: a sweep's trials collect in their own process (Tune places each trial on the "
                "CPUs it reserves); run remote collectors with `agent-runtime train --collectors` instead"
            )
        if len(set(self.presets)) != len(self.presets):
            raise ValueError(f"presets {self.presets} repeat a preset")
        labels = [s.label for s in self.settings()]
        if len(set(labels)) != len(labels):
            raise ValueError(f"--set gives a value twice on one axis: the grid's settings {labels} repeat")
        for setting in self.settings():  # every grid point must make a valid training config
            apply_overrides(TrainConfig(), (*self.fixed(), *setting.overrides))

    def fixed(self) -> tuple[Override, ...]:
        """The settings every trial has."""
        return parse_grid(self.set)[0]

    def settings(self) -> list[Setting]:
        """The grid points, each with its label."""
        return [Setting(label_of(point), point) for point in parse_grid(self.set)[1]]
