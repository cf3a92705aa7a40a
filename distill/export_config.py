"""Configuration of ``agent-runtime export``: a plain frozen dataclass, importable without torch.

The CLI derives the subcommand's flags from :class:`ExportConfig` (each field's docstring is its
help text) and hands it to :func:`distill.export.run_export`, imported only when the export runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MIN_PARITY_OBSERVATIONS = 256
"""The fewest real observations an export is checked on (issue 4: at least 256)."""

DEFAULT_ONNX_NAME = "policy.onnx"
"""The exported file's name inside the run directory when ``out`` is not given."""


@dataclass(frozen=True)
class ExportConfig:
    """Export a trained policy to one ONNX file: raw observations in, bounded action out, spec inside."""

    run_dir: Path = Path("runs/teacher")
    """Run directory of the policy to export: a teacher run of `agent-runtime train` or a student run
    of `agent-runtime distill`."""
    out: Path | None = None
    """Path of the .onnx file to write; default: policy.onnx inside run_dir. Written under a temporary
    name in the same directory and renamed only after every check passed."""
    parity_observations: int = MIN_PARITY_OBSERVATIONS
    """Real observations from the task on which onnxruntime must match torch within 1e-4 (at least 256)."""
    collect_with: Literal["policy", "random"] = "policy"
    """Actions that step the task while collecting those observations: the exported policy's own (the
    states it will meet when deployed) or uniformly random ones."""
    seed: int = 0
    """Seed of the collection episodes (episode i resets with seed + i) and of random actions."""
    latency_calls: int = 200
    """Single-sample onnxruntime calls on one CPU thread timed for the latency p50/p99; 0 skips timing."""
    threads: int = 2
    """torch CPU threads for the reference actions."""

    def __post_init__(self) -> None:
        if self.parity_observations < MIN_PARITY_OBSERVATIONS:
            raise ValueError(
                f"parity_observations is {self.parity_observations}; it must be at least {MIN_PARITY_OBSERVATIONS}"
            )
        if self.collect_with not in ("policy", "random"):
            raise ValueError(f"collect_with is {self.collect_with!r}; use 'policy' or 'random'")
        if self.seed < 0:
            raise ValueError(f"seed is {self.seed}; environment seeds must not be negative")
        if self.latency_calls < 0:
            raise ValueError(f"latency_calls is {self.latency_calls}; it must not be negative (0 skips timing)")
        if self.threads < 1:
            raise ValueError(f"threads is {self.threads}; it must be at least 1")

    @property
    def output_path(self) -> Path:
        """Where the ONNX file goes: ``out``, or ``policy.onnx`` inside ``run_dir``."""
        return self.out if self.out is not None else self.run_dir / DEFAULT_ONNX_NAME
