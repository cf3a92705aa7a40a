"""The names of the files in a training run directory, importable without torch.

The runner writes them; the CLI, the demo, distillation and the benchmarks find a run's checkpoint
and summary by these names, and the demo (which must import without torch) reads them from here
rather than from the runner.
"""

CHECKPOINT_NAME = "checkpoints/latest.pt"
"""The run's checkpoint, relative to the run directory: rewritten at every checkpoint, resumed from."""
SUMMARY_NAME = "summary.json"
"""Written when a run finishes (its final evaluation done); a run directory without it is unfinished."""
