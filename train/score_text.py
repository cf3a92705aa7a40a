"""A policy score's plain-JSON form (``train.scores.PolicyScore.to_dict``) as text for report tables.

Pure Python on plain dicts, so a report rebuilt from saved JSON (the demo's) reads exactly like one
made fresh, and the CLI can print one without the training extra's libraries.
"""

from __future__ import annotations

from typing import Any


def interval_text(point: float, ci: dict[str, float], digits: int = 1) -> str:
    """``point [low, high]``."""
    return f"{point:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def returns_text(stats: dict[str, Any]) -> str:
    """Mean and IQM with their 95% intervals, from :meth:`ReturnStats.to_dict`."""
    mean = interval_text(stats["mean"], stats["mean_ci"])
    middle = interval_text(stats["iqm"], stats["iqm_ci"])
    return f"mean {mean}, IQM {middle} ({stats['episodes']} episodes)"


def failure_text(stats: dict[str, Any]) -> str:
    """``k of n (p%, 95% CI [lo%, hi%])``, or why there is no failure rate."""
    if stats["failures"] is None:
        return "no failure criterion"
    ci = stats["failure_ci"]
    return (
        f"{stats['failures']} of {stats['episodes']} ({100 * stats['failure_rate']:.1f}%, "
        f"95% CI [{100 * ci['low']:.1f}%, {100 * ci['high']:.1f}%])"
    )


def worst_text(score: dict[str, Any], count: int = 3) -> str:
    """The worst episodes as ``seed: return`` (the seed replays it), from :meth:`PolicyScore.to_dict`."""
    return ", ".join(f"{e['seed']}: {e['ret']:.1f}" for e in score["worst"][:count]) or "none"
