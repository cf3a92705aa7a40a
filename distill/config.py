"""Configuration of ``agent-runtime distill``: a plain frozen dataclass, importable without torch.

The CLI derives the subcommand's flags from :class:`DistillConfig`; each field's docstring is its help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from models.policy_kinds import StudentKind
from train.config import check_device_name, require_at_least_one
from train.presets import ObsMode

STUDENT_KINDS: tuple[StudentKind, ...] = ("conv", "mlp")


@dataclass(frozen=True)
class DistillConfig:
    """Distill a teacher run into a small student policy by DAgger, with behaviour cloning as the baseline."""

    teacher: Path = Path("runs/teacher")
    """Run directory of the teacher (`agent-runtime train --run-dir`)."""
    run_dir: Path = Path("runs/student")
    """Where the student run goes: checkpoint, datasets, ONNX files, report card, video."""
    student: StudentKind = "conv"
    """conv: a small conv net on the camera frames plus proprio (a pixel student, also from a state
    teacher); mlp: an MLP on the state vector."""
    channels: int = 16
    """Convolution channels of the conv student."""
    downsample: int = 2
    """Average-pooling factor the conv student applies to the frames first (1: full resolution)."""
    hidden: tuple[int, ...] = (48, 48)
    """Hidden layers of the student's MLP. With 48-48 the conv student has about 10k parameters, 20x
    fewer than the inverted_pendulum pixel teacher (BENCHMARKS.md)."""
    chunk: int = 1
    """Actions per student answer. 1: one action per observation, by DAgger. H > 1: an action-chunk
    student, trained by behaviour cloning of the teacher's next H actions along teacher-driven
    trajectories (as ACT does; labels past an episode's end are masked out). A state's chunk labels
    are the teacher's own future, which exists only where the teacher drives, so every iteration is
    teacher-driven: DAgger, its baseline and the failure-aimed iterations do not apply. The exported
    spec declares the chunk (H, one control period apart); a robot host runs it through
    agent_runtime.chunks, which hides network delay behind the queued actions."""
    chunk_noise: float = 0.0
    """With --chunk: standard deviation of Gaussian noise added to the teacher's applied actions while
    it drives the collection, in [-1, 1] action units (DART): the trajectories stray as the student's
    will, and the teacher's labels show the way back. 0 off. Only for a chunked student (DAgger's
    student-driven steps do that job)."""
    iterations: int = 6
    """DAgger iterations: each collects, labels with the teacher, aggregates and trains."""
    steps_per_iteration: int = 2_000
    """Environment steps collected per iteration (also for the behaviour cloning baseline)."""
    beta_decay: float = 0.5
    """Probability that the teacher drives a step in iteration i is beta_decay ** i: the first iteration
    is the teacher's alone, later ones more and more the student's."""
    updates_per_iteration: int = 1_000
    """Gradient steps on the aggregated dataset after each iteration's collection."""
    batch_size: int = 256
    """Observations per gradient step."""
    lr: float = 1e-3
    """Adam learning rate of the student."""
    baseline: bool = True
    """Also train behaviour cloning (the teacher drives every step, same data and update budget) and
    report it beside DAgger."""
    eval_episodes: int = 100
    """Held-out evaluation episodes of the report card: the teacher, random actions and the students
    all run the same seeds. 100 show a 1-in-50 failure with probability 0.87."""
    eval_seconds: float = 900.0
    """Most seconds the teacher's evaluation may take: it starts no episode after that, and the other
    policies run the seeds it reached. The card says how many episodes it rests on."""
    failure_below: float | None = None
    """An evaluation episode whose return is below this fails, beside the task's own criterion. Unset:
    the task's own criterion (inverted_pendulum, walker2d: the episode terminated, it fell), or for a
    task without one a return below failure_fraction of the way from random actions to the teacher."""
    failure_fraction: float = 0.5
    """For a task without its own failure criterion and no failure_below: an episode fails below this
    fraction of the way from random actions' median return to the teacher's."""
    failure_iterations: int = 3
    """DAgger iterations aimed at failures, after the fixed ones: while the student fails check
    episodes that the teacher handles, one more iteration replays those episodes' seeds (the student
    drives, the teacher labels the states that led there), fills up with fresh student-driven
    episodes, and trains. 0 turns it off; behaviour cloning gets as many more iterations as DAgger ran."""
    check_episodes: int = 100
    """Student episodes of each failure check (seeds of their own, never the report's)."""
    check_seconds: float = 240.0
    """Most seconds one failure check may take (at least one episode runs)."""
    latency_calls: int = 500
    """Single-sample onnxruntime calls (one thread) timed for teacher and student latency."""
    video: bool = True
    """Record an mp4 of the student's first evaluation episode."""
    seed: int = 0
    """Seed of the student's initialization, the collection episodes and the minibatches."""
    threads: int = 2
    """torch CPU threads."""
    device: str = "auto"
    """Where the student trains: auto (CUDA when available, else the CPU), cpu, cuda, or cuda:N.
    Collection, the teacher's labels, evaluation and export run on the CPU, as on the robot."""
    collectors: int = 0
    """DAgger's collection on Ray actors: 0 (the default) collects in this process; N splits each
    iteration's steps over N actors, each with its own environment, a CPU copy of the student and the
    teacher's ONNX file in onnxruntime for the labels. Actor i resets its episodes from its own range of
    seeds and draws from its own random stream (actor 0's are this process's, so one actor collects what
    in-process collection does). Needs the ray extra."""
    ray_address: str | None = None
    """Ray cluster to join with --collectors (e.g. auto, head:6379 or ray://head:10001); unset: RAY_ADDRESS if
    set, else a cluster started on this node with `ray start`, else a new local instance with the CPUs Ray
    detects."""

    def __post_init__(self) -> None:
        if self.student not in STUDENT_KINDS:
            raise ValueError(f"student is {self.student!r}; the student architectures are {', '.join(STUDENT_KINDS)}")
        positive = (
            "channels",
            "downsample",
            "iterations",
            "steps_per_iteration",
            "updates_per_iteration",
            "batch_size",
            "eval_episodes",
            "check_episodes",
            "threads",
        )
        require_at_least_one(self, positive)
        check_device_name(self.device)
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden is {self.hidden}; give one or more positive layer sizes")
        if not 0.0 <= self.beta_decay <= 1.0:
            raise ValueError(f"beta_decay is {self.beta_decay}; it must be in [0, 1]")
        for name in ("eval_seconds", "check_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} is {value}; it must be positive")
        if self.failure_below is not None and not math.isfinite(self.failure_below):
            raise ValueError(f"failure_below is {self.failure_below}; give a finite return (or leave it out)")
        if not 0.0 < self.failure_fraction <= 1.0:
            raise ValueError(f"failure_fraction is {self.failure_fraction}; it must be in (0, 1]")
        if self.failure_iterations < 0:
            raise ValueError(f"failure_iterations is {self.failure_iterations}; it must not be negative (0: off)")
        if self.check_episodes > 10_000:
            raise ValueError(f"check_episodes is {self.check_episodes}; at most 10,000 per check")
        if self.collectors < 0:
            raise ValueError(f"collectors is {self.collectors}; use 0 (collect in this process) or more")
        if self.collectors > self.steps_per_iteration:
            raise ValueError(
                f"collectors is {self.collectors}; each collects a share of the {self.steps_per_iteration} steps per "
                "iteration, so use at most that many"
            )
        if self.chunk < 1:
            raise ValueError(f"chunk is {self.chunk}; it must be 1 (one action per observation) or more")
        if not (math.isfinite(self.chunk_noise) and 0 <= self.chunk_noise <= 2):
            raise ValueError(f"chunk_noise is {self.chunk_noise}; it must be in [0, 2] (action units of [-1, 1])")
        if self.chunk_noise and self.chunk == 1:
            raise ValueError("chunk_noise is for a chunked student (--chunk H > 1); DAgger needs no noise")
        if self.lr <= 0:
            raise ValueError(f"lr is {self.lr}; it must be positive")
        if self.latency_calls < 0:
            raise ValueError(f"latency_calls is {self.latency_calls}; it must not be negative (0 skips timing)")
        if self.teacher.resolve() == self.run_dir.resolve():
            raise ValueError(f"run_dir is the teacher's directory {self.teacher}; the student needs its own")

    @property
    def student_mode(self) -> ObsMode:
        """The environment observation mode the student acts from."""
        return "pixels" if self.student == "conv" else "state"

    def beta(self, iteration: int) -> float:
        """Probability that the teacher drives a step of DAgger iteration ``iteration`` (0-based)."""
        return float(self.beta_decay**iteration)

    @property
    def capacity(self) -> int:
        """Observations the aggregated dataset can hold: every fixed and failure-aimed iteration."""
        return (self.iterations + self.failure_iterations) * self.steps_per_iteration
