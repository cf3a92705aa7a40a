"""Learning curves over seeds: the table (mean, and IQM with its interval, at chosen steps) and the plot.

A run's curve is its periodic evaluations, ``[[step, mean return, std], ...]`` as ``summary.json`` and
``evals.json`` keep them. Across seeds every point is the interquartile mean with rliable's stratified
bootstrap 95% interval (``train.stats.across_seeds_iqm``) beside the plain mean. Seeds are compared at
the steps all of them reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.stats import across_seeds_iqm

Curve = list[list[float]]
"""One run's evaluations: ``[step, mean return, std]`` rows, steps ascending."""


@dataclass(frozen=True)
class CurveRow:
    """One setting's point at one step: the mean over seeds, and their IQM with its 95% interval."""

    task: str
    setting: str
    seeds: int
    step: int
    mean: float
    iqm: float
    low: float
    high: float


def aligned(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """Steps every seed evaluated at (the shortest run's) and the returns there: ``x (T,)``, ``y (seeds, T)``."""
    length = min(len(c) for c in curves)
    x = np.array([curves[0][i][0] for i in range(length)])
    for curve in curves[1:]:
        if [row[0] for row in curve[:length]] != list(x):
            raise ValueError("the runs evaluated at different steps; give them the same --eval-every")
    return x, np.array([[c[i][1] for i in range(length)] for c in curves])


def rows(task: str, setting: str, curves: list[Curve], at: list[int]) -> list[CurveRow]:
    """Rows at each step of ``at`` the seeds reached (the evaluation at or after it), and at the last step."""
    if not curves:
        return []
    x, y = aligned(curves)
    wanted = sorted({int(s) for s in at if s <= x[-1]} | {int(x[-1])})
    out = []
    for step in wanted:
        i = int(np.searchsorted(x, step))
        point, ci = across_seeds_iqm(y[:, i])
        out.append(CurveRow(task, setting, len(curves), int(x[i]), float(y[:, i].mean()), point, ci.low, ci.high))
    return out


def markdown(table: list[CurveRow], episodes: int) -> str:
    """The rows as a markdown table."""
    lines = [
        f"| task | setting | seeds ({episodes} episodes each) | step | mean over seeds | IQM [95% CI] |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in table:
        interval = f"{r.iqm:.1f} [{r.low:.1f}, {r.high:.1f}]"
        lines.append(f"| {r.task} | {r.setting} | {r.seeds} | {r.step} | {r.mean:.1f} | {interval} |")
    return "\n".join(lines)


def plot(series: dict[str, list[Curve]], png: Path, title: str) -> Path:
    """One line per setting: the IQM over seeds with its interval as a band, the mean dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for setting, curves in series.items():
        if not curves:
            continue
        x, y = aligned(curves)
        band = [across_seeds_iqm(y[:, i], resamples=1_000) for i in range(len(x))]
        line = axis.plot(x, [b[0] for b in band], label=f"{setting} (IQM, {len(curves)} seeds)")[0]
        axis.fill_between(x, [b[1].low for b in band], [b[1].high for b in band], alpha=0.2, color=line.get_color())
        axis.plot(x, y.mean(0), linestyle="--", linewidth=1, color=line.get_color())
    axis.set_title(f"{title}: IQM over seeds, 95% bootstrap band; dashed: mean", fontsize=9)
    axis.set_xlabel("environment steps")
    axis.set_ylabel("evaluation return")
    axis.legend(fontsize=7)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
