"""Failure checks: where the student fails episodes that the teacher handles, DAgger goes back there.

A check runs the student alone on episodes of its own (seeds apart from collection's and the
report's), replays the teacher on the seeds the student failed, and keeps the seeds where the
teacher did not fail: those are the student's own failures. The next DAgger iteration resets its first
episodes with those seeds, so the student drives into the same states and the teacher labels them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from distill.actors import Actor, ActorPolicy, torch_actor
from models.student import Student
from train.evaluate import evaluate
from train.failure import FailureRule
from train.presets import ObsMode, TaskPreset

log = logging.getLogger(__name__)

CHECK_SEED_BASE = 500_000_000
"""Check episodes start here (per run seed and check), apart from collection's and the report's seeds."""
CHECK_SEEDS_PER_CHECK = 10_000


def check_seeds(seed: int, after_iteration: int, episodes: int) -> list[int]:
    """Seeds of the check after ``after_iteration`` DAgger iterations of run seed ``seed``."""
    if not 0 < episodes <= CHECK_SEEDS_PER_CHECK:
        raise ValueError(f"a failure check runs 1 to {CHECK_SEEDS_PER_CHECK:,} episodes; asked for {episodes}")
    first = CHECK_SEED_BASE + seed * 100 * CHECK_SEEDS_PER_CHECK + after_iteration * CHECK_SEEDS_PER_CHECK
    return list(range(first, first + episodes))


@dataclass(frozen=True)
class FailureCheck:
    """What one check found.

    Attributes:
        after_iteration: DAgger iterations done when the check ran.
        episodes: check episodes run (a time budget may stop it early).
        student_failures: episodes the student failed.
        teacher_handles: seeds of those that the teacher, replayed on them, did not fail.
    """

    after_iteration: int
    episodes: int
    student_failures: int
    teacher_handles: tuple[int, ...]


@dataclass(frozen=True)
class FailureChecker:
    """Runs checks of a student against its teacher on one task under one failure rule.

    Attributes:
        task: the task preset.
        student_mode, teacher_mode: the observation modes they act from.
        teacher: the teacher's actor.
        rule: the report card's failure criterion (it must be defined).
        seed: the run seed (the checks' seeds derive from it).
        episodes: student episodes per check.
        budget_s: most seconds the student's episodes of one check may take.
    """

    task: TaskPreset
    student_mode: ObsMode
    teacher_mode: ObsMode
    teacher: Actor
    rule: FailureRule
    seed: int
    episodes: int
    budget_s: float

    def __post_init__(self) -> None:
        if not self.rule.defined:
            raise ValueError("a failure check needs a failure criterion; the task states none and none was given")

    def check(self, student: Student, after_iteration: int) -> FailureCheck:
        """Check ``student`` (on the CPU) after ``after_iteration`` iterations."""
        seeds = check_seeds(self.seed, after_iteration, self.episodes)
        student_policy = ActorPolicy(torch_actor(student))
        result = evaluate(student_policy, self.task, self.student_mode, seeds, budget_s=self.budget_s)
        failing = _failed_seeds(self.rule, result.seeds, result.returns, result.terminated)
        handled: list[int] = []
        if failing:
            replay = evaluate(ActorPolicy(self.teacher), self.task, self.teacher_mode, failing)
            teacher_failed = set(_failed_seeds(self.rule, replay.seeds, replay.returns, replay.terminated))
            handled = [s for s in failing if s not in teacher_failed]
        log.info(
            "failure check after iteration %d: the student failed %d of %d episodes, %d of them ones the teacher "
            "handles", after_iteration, len(failing), len(result.seeds), len(handled),
        )  # fmt: skip
        return FailureCheck(after_iteration, len(result.seeds), len(failing), tuple(handled))


def _failed_seeds(
    rule: FailureRule, seeds: tuple[int, ...], returns: tuple[float, ...], terminated: tuple[bool, ...]
) -> list[int]:
    failed = rule.failed(returns, terminated)
    return [] if failed is None else [s for s, f in zip(seeds, failed, strict=True) if f]
