"""The report card of a distillation: what the student kept of the teacher, how often it fails, its size and speed.

Every policy (random actions, the teacher, each student) is scored on the same held-out episodes
with the statistics of ``train.stats``: mean and IQM with bootstrap intervals, a failure rate with
its Wilson interval, and the seeds of the worst episodes (``agent-runtime evaluate --seeds`` replays
them). Retention compares the same episodes, so its interval comes from a paired bootstrap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from distill.failure_check import FailureCheck
from train.score_text import failure_text, returns_text, worst_text
from train.scores import PolicyScore
from train.stats import Ratio


@dataclass(frozen=True)
class ReportCard:
    """Teacher against students on the same held-out seeds, with random actions as the floor.

    Retention is ``student / teacher`` (mean returns) when the teacher's return is positive. Returns
    that are costs (negative, e.g. Reacher's distance penalty) make that ratio meaningless, so the card
    also gives the normalized retention ``(student - random) / (teacher - random)``, which reads the
    same way for every task: 1 is the teacher, 0 is random. Both carry 95% paired bootstrap intervals.
    """

    preset: str
    teacher_policy: str
    student_policy: str
    seeds: tuple[int, ...]
    episodes_requested: int
    eval_seconds: float
    failure_criterion: str | None
    random: PolicyScore
    teacher: PolicyScore
    students: dict[str, PolicyScore]
    retention: dict[str, Ratio | None]
    normalized_retention: dict[str, Ratio | None]
    failure_checks: tuple[FailureCheck, ...]
    teacher_parameters: int
    student_parameters: int
    teacher_latency_ms: tuple[float, float] | None
    student_latency_ms: tuple[float, float] | None
    parity_max_abs_diff: float
    parity_observations: int
    dataset_size: int

    @property
    def compression(self) -> float:
        """Teacher parameters (encoder included) per student parameter."""
        return self.teacher_parameters / self.student_parameters

    @property
    def speedup(self) -> float | None:
        """Teacher p50 latency / student p50 latency."""
        if self.teacher_latency_ms is None or self.student_latency_ms is None:
            return None
        return self.teacher_latency_ms[0] / self.student_latency_ms[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, with the derived figures."""
        data = dataclasses.asdict(self)
        data["compression"] = self.compression
        data["speedup"] = self.speedup
        return data

    def table(self) -> str:
        """The card as a Markdown table, for the terminal and for BENCHMARKS.md."""
        return card_table(self.to_dict())


def _ratio(value: dict[str, Any] | None, what: str) -> str:
    if value is None:
        return f"n/a ({what})"
    ci = value["ci"]
    return f"{100 * value['value']:.1f}% [{100 * ci['low']:.1f}%, {100 * ci['high']:.1f}%]"


def _ms(value: list[float] | tuple[float, float] | None) -> str:
    return "not timed" if value is None else f"p50 {value[0]:.3f} ms, p99 {value[1]:.3f} ms"


def card_table(card: dict[str, Any]) -> str:
    """A card's plain-JSON form (:meth:`ReportCard.to_dict`, or a saved ``report.json``) as a Markdown table."""
    seeds = card["seeds"]
    ran = f"{len(seeds)} held-out episodes, the same seeds for every policy ({seeds[0]}..{seeds[-1]})"
    if len(seeds) < card["episodes_requested"]:
        ran += f"; {card['episodes_requested']} asked for, the {card['eval_seconds']:.0f} s budget stopped it"
    rows = [
        ("task", card["preset"]),
        ("evaluation", ran),
        ("failure criterion", card["failure_criterion"] or "none (pass --failure-below)"),
    ]
    policies = [("random actions", card["random"]), (f"teacher ({card['teacher_policy']})", card["teacher"])]
    names = {"dagger": "student, DAgger", "bc": "student, behaviour cloning", "chunk": "student, action chunks (BC)"}
    policies += [(names.get(m, m), s) for m, s in card["students"].items()]
    for name, score in policies:
        rows.append((f"{name}: return", returns_text(score["stats"])))
        rows.append((f"{name}: failures", failure_text(score["stats"])))
        rows.append((f"{name}: worst episodes (seed: return)", worst_text(score)))
    for method in card["students"]:
        name = names.get(method, method)
        plain = _ratio(card["retention"][method], "teacher return not positive")
        rows.append((f"{name}: retention, student / teacher", plain))
        rows.append(
            (
                f"{name}: retention, (s - random) / (t - random)",
                _ratio(card["normalized_retention"][method], "teacher no better than random"),
            )
        )
    if "bc" in card["students"] and "dagger" in card["students"]:
        dagger, bc = card["students"]["dagger"]["stats"], card["students"]["bc"]["stats"]
        rows.append(("DAgger - behaviour cloning (mean return)", f"{dagger['mean'] - bc['mean']:+.1f}"))
    for check in card["failure_checks"]:
        rows.append(
            (
                f"failure check after iteration {check['after_iteration']}",
                f"student failed {check['student_failures']} of {check['episodes']}; the teacher handles "
                f"{len(check['teacher_handles'])} of those",
            )
        )
    rows += [
        ("parameters: teacher (encoder included)", f"{card['teacher_parameters']:,}"),
        (f"parameters: student ({card['student_policy']})", f"{card['student_parameters']:,}"),
        ("compression", f"{card['compression']:.1f}x"),
        ("latency, teacher (onnxruntime, 1 thread, batch 1)", _ms(card["teacher_latency_ms"])),
        ("latency, student (onnxruntime, 1 thread, batch 1)", _ms(card["student_latency_ms"])),
        ("speed-up (p50)", "n/a" if card["speedup"] is None else f"{card['speedup']:.1f}x"),
        (
            f"parity, max |onnxruntime - torch| ({card['parity_observations']} observations)",
            f"{card['parity_max_abs_diff']:.2e}",
        ),
        ("dataset (labelled observations)", f"{card['dataset_size']:,}"),
    ]
    lines = ["| report card | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)
