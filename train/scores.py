"""One policy's evaluation as every report shows it: the statistics, the worst episodes by seed, the time.

:func:`score` turns an :class:`~train.evaluate.EvalResult` into a :class:`PolicyScore`;
``train.score_text`` renders its plain-JSON form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from train.evaluate import EvalResult
from train.failure import FailureRule
from train.stats import ReturnStats, return_stats

WORST_EPISODES = 5
"""Worst episodes a report lists by seed, for replaying them."""


@dataclass(frozen=True)
class Episode:
    """One evaluation episode: ``env.reset(seed=seed)`` and the same policy replay it."""

    seed: int
    ret: float
    length: int
    terminated: bool
    failed: bool | None


@dataclass(frozen=True)
class PolicyScore:
    """A policy's evaluation: statistics over its episodes and the worst episodes (lowest return first).

    Attributes:
        stats: mean, median, IQM with intervals; failure rate with its interval.
        worst: the lowest-return episodes, at most :data:`WORST_EPISODES`.
        requested: episodes asked for; more than ``stats.episodes`` when a time budget cut the run short.
        seconds: wall time of the evaluation.
    """

    stats: ReturnStats
    worst: tuple[Episode, ...]
    requested: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)


def score(result: EvalResult, rule: FailureRule, seed: int = 0, worst: int = WORST_EPISODES) -> PolicyScore:
    """The report's statistics of ``result`` under ``rule``; ``seed`` seeds the bootstrap."""
    failed = rule.failed(result.returns, result.terminated)
    stats = return_stats(result.returns, failed, rule.describe(), seed=seed)
    order = np.argsort(np.asarray(result.returns), kind="stable")[:worst]
    episodes = tuple(
        Episode(
            seed=result.seeds[i],
            ret=result.returns[i],
            length=result.lengths[i],
            terminated=result.terminated[i],
            failed=None if failed is None else bool(failed[i]),
        )
        for i in order
    )
    return PolicyScore(stats, episodes, result.requested, round(result.seconds, 1))
