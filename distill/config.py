"""Configuration of ``agent-runtime distill``: a plain frozen dataclass, importable without torch.

The CLI derives the subcommand's flags from :class:`DistillConfig`; each field's docstring is its help.
"""

from __future__ import annotations

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
    eval_episodes: int = 10
    """Evaluation episodes of teacher and students, on the same held-out seeds."""
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
            "threads",
        )
        require_at_least_one(self, positive)
        check_device_name(self.device)
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden is {self.hidden}; give one or more positive layer sizes")
        if not 0.0 <= self.beta_decay <= 1.0:
            raise ValueError(f"beta_decay is {self.beta_decay}; it must be in [0, 1]")
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
        """Observations the aggregated dataset holds after the last iteration."""
        return self.iterations * self.steps_per_iteration
