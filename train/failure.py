"""When an evaluation episode counts as a failure: the task's own criterion, or a return threshold.

A robot engineer asks how often a policy fails, not only what it scores on average. Two kinds of
criterion cover the tasks here:

- the task's own: the environment ends an episode early exactly when the robot fails (the pendulum
  fell, the walker fell), so an episode that *terminated* (rather than reaching the time limit) failed;
- a return threshold: an episode whose return is below it failed. A preset may state one; a report
  card that has a teacher derives one from the teacher and random actions (:func:`relative_threshold`),
  which reads the same way for rewards and for costs.

Both may apply at once; an episode fails when either says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from train.presets import TaskPreset


@dataclass(frozen=True)
class FailureRule:
    """A failure criterion for evaluation episodes.

    Attributes:
        termination: what an early termination means for the task (e.g. "the pole fell"), when a
            terminated episode is a failure; ``None`` when termination is not a failure.
        below: an episode whose return is below this failed; ``None`` for no return threshold.
        below_origin: where ``below`` comes from, for the report (e.g. "half way from random to the teacher").
    """

    termination: str | None = None
    below: float | None = None
    below_origin: str = "given"

    def __post_init__(self) -> None:
        if self.below is not None and not math.isfinite(self.below):
            raise ValueError(f"a failure threshold must be a finite return; got {self.below}")

    @property
    def defined(self) -> bool:
        """Whether the rule can call any episode a failure."""
        return self.termination is not None or self.below is not None

    def describe(self) -> str | None:
        """The criterion in words, for a report; ``None`` when there is none."""
        parts = []
        if self.termination is not None:
            parts.append(f"the episode terminated early ({self.termination})")
        if self.below is not None:
            parts.append(f"return below {self.below:.4g} ({self.below_origin})")
        return " or ".join(parts) if parts else None

    def failed(self, returns: Sequence[float], terminated: Sequence[bool]) -> np.ndarray | None:
        """One boolean per episode (``None`` when the rule is not defined)."""
        if not self.defined:
            return None
        values = np.asarray(returns, dtype=np.float64)
        ended = np.asarray(terminated, dtype=bool)
        if values.shape != ended.shape:
            raise ValueError(f"{values.size} returns but {ended.size} termination flags; give one of each per episode")
        failed = np.zeros(values.shape, dtype=bool)
        if self.termination is not None:
            failed |= ended
        if self.below is not None:
            failed |= values < self.below
        return failed


def preset_rule(preset: TaskPreset, below: float | None = None) -> FailureRule:
    """The task's own criterion, with ``below`` (a return threshold the user gives) added when set."""
    return FailureRule(termination=preset.failure_on_termination, below=below, below_origin="given")


def relative_threshold(teacher_median: float, random_median: float, fraction: float) -> float | None:
    """The return ``fraction`` of the way from random actions' median to the teacher's.

    ``None`` when the teacher is no better than random (no threshold would mean anything).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the failure fraction is {fraction}; it must be in (0, 1]")
    span = teacher_median - random_median
    if span <= 0:
        return None
    return random_median + fraction * span


def report_rule(
    preset: TaskPreset,
    teacher_returns: Sequence[float],
    random_returns: Sequence[float],
    fraction: float,
    below: float | None = None,
) -> FailureRule:
    """The criterion of a report card that has a teacher and random actions on the same episodes.

    A threshold the user gives (``below``) applies beside the task's own criterion. Without one, a task
    that states its own criterion (its terminations) uses only that; a task that states none fails an
    episode whose return is below :func:`relative_threshold` of the two medians.
    """
    if below is not None or preset.failure_on_termination is not None:
        return preset_rule(preset, below)
    threshold = relative_threshold(float(np.median(teacher_returns)), float(np.median(random_returns)), fraction)
    if threshold is None:
        return FailureRule()
    origin = f"{fraction:.0%} of the way from random actions' median return to the teacher's"
    return FailureRule(below=threshold, below_origin=origin)
