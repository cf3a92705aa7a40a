"""The report card of a distillation: how much of the teacher the student kept, at what size and speed."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Returns:
    """Evaluation returns of one policy on the report's seeds."""

    mean: float
    std: float
    episodes: tuple[float, ...]

    @classmethod
    def of(cls, returns: Sequence[float]) -> Returns:
        """Summarize episode returns."""
        values = np.asarray(returns, dtype=np.float64)
        return cls(float(values.mean()), float(values.std()), tuple(float(v) for v in values))

    def text(self) -> str:
        """``mean +- std``."""
        return f"{self.mean:.1f} +- {self.std:.1f}"


@dataclass(frozen=True)
class ReportCard:
    """Teacher against student on the same held-out seeds, with random actions as the floor.

    Retention is ``student / teacher`` (mean returns), as the issue defines it, when the teacher's
    return is positive. Returns that are costs (negative, e.g. Reacher's distance penalty) make that
    ratio meaningless, so the card also gives the normalized retention ``(student - random) /
    (teacher - random)``, which reads the same way for every task: 1 is the teacher, 0 is random.
    """

    preset: str
    teacher_policy: str
    student_policy: str
    seeds: tuple[int, ...]
    random: Returns
    teacher: Returns
    students: dict[str, Returns]
    teacher_parameters: int
    student_parameters: int
    teacher_latency_ms: tuple[float, float] | None
    student_latency_ms: tuple[float, float] | None
    parity_max_abs_diff: float
    parity_observations: int
    dataset_size: int

    def retention(self, method: str = "dagger") -> float | None:
        """Student return / teacher return, or ``None`` when the teacher's return is not positive."""
        if self.teacher.mean <= 0:
            return None
        return self.students[method].mean / self.teacher.mean

    def normalized_retention(self, method: str = "dagger") -> float | None:
        """(student - random) / (teacher - random), or ``None`` when the teacher is no better than random."""
        span = self.teacher.mean - self.random.mean
        if span <= 0:
            return None
        return (self.students[method].mean - self.random.mean) / span

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
        data["retention"] = {m: self.retention(m) for m in self.students}
        data["normalized_retention"] = {m: self.normalized_retention(m) for m in self.students}
        data["compression"] = self.compression
        data["speedup"] = self.speedup
        return data

    def table(self) -> str:
        """The card as a Markdown table, for the terminal and for BENCHMARKS.md."""

        def pct(value: float | None) -> str:
            return "n/a (teacher return not positive)" if value is None else f"{100 * value:.1f}%"

        def ms(value: tuple[float, float] | None) -> str:
            return "not timed" if value is None else f"p50 {value[0]:.3f} ms, p99 {value[1]:.3f} ms"

        rows = [
            ("task", self.preset),
            (f"evaluation seeds ({len(self.seeds)})", f"{self.seeds[0]}..{self.seeds[-1]}"),
            ("random actions: return", self.random.text()),
            (f"teacher ({self.teacher_policy}): return", self.teacher.text()),
        ]
        for method, returns in self.students.items():
            name = "DAgger" if method == "dagger" else "behaviour cloning"
            rows.append((f"student, {name}: return", returns.text()))
            rows.append((f"student, {name}: retention (student / teacher)", pct(self.retention(method))))
            rows.append(
                (f"student, {name}: retention ((s - random) / (t - random))", pct(self.normalized_retention(method)))
            )
        if "bc" in self.students:
            ahead = self.students["dagger"].mean - self.students["bc"].mean
            rows.append(("DAgger - behaviour cloning (return)", f"{ahead:+.1f}"))
        rows += [
            ("parameters: teacher (encoder included)", f"{self.teacher_parameters:,}"),
            (f"parameters: student ({self.student_policy})", f"{self.student_parameters:,}"),
            ("compression", f"{self.compression:.1f}x"),
            ("latency, teacher (onnxruntime, 1 thread, batch 1)", ms(self.teacher_latency_ms)),
            ("latency, student (onnxruntime, 1 thread, batch 1)", ms(self.student_latency_ms)),
            ("speed-up (p50)", "n/a" if self.speedup is None else f"{self.speedup:.1f}x"),
            (
                f"parity, max |onnxruntime - torch| ({self.parity_observations} observations)",
                f"{self.parity_max_abs_diff:.2e}",
            ),
            ("dataset (labelled observations)", f"{self.dataset_size:,}"),
        ]
        lines = ["| report card | |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)
