"""The names of the files in a training run directory, importable without torch.

The runner writes them; the CLI, the demo, distillation and the benchmarks find a run's checkpoint
and summary by these names, and the demo (which must import without torch) reads them from here
rather than from the runner.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_NAME = "checkpoints/latest.pt"
"""The run's checkpoint, relative to the run directory: rewritten at every checkpoint, resumed from."""
SUMMARY_NAME = "summary.json"
"""Written when a run finishes (its final evaluation done); a run directory without it is unfinished."""
EVALS_NAME = "evals.json"
"""The run's periodic evaluations so far, rewritten after each one (readable while the run goes on)."""
PRESET_COPY_NAME = "preset.toml"
"""A run's copy of the preset file it was trained on (canonical text); absent for a built-in preset."""


def run_preset(run_dir: Path, task_preset: str) -> str:
    """How to name a run's preset to ``get_preset``: its kept copy if it has one, else the built-in name."""
    copy = run_dir / PRESET_COPY_NAME
    return str(copy) if copy.is_file() else task_preset
