"""Learning curves kept in the repository, so that a benchmark built up over sessions survives the machine.

A run directory (checkpoints, replay) lives under ``runs/``, which does not outlive the machine it was
made on. What a benchmark table needs from a run is small: its periodic evaluations, its config and
where it ran. This module writes that as one JSON file per run (``bench/curves/<run name>.json``,
the run name being ``<task>-<method>-s<seed>`` as ``bench.learning_curves`` names run directories),
and reads it back when the run directory is gone. A record says whether its run finished the target
it was started with; an unfinished one is reported as far as it got and is trained again from the
start (its checkpoint did not survive) when a benchmark asks for more.

Usage (keep the curves of every run in a directory, finished or not, e.g. before a session ends):
python -m bench.curve_records runs/bench-dmc
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from agent_runtime.files import write_text_atomically
from train.run_files import EVALS_NAME, SUMMARY_NAME
from train.sweep import curve_of

RECORDS = Path(__file__).resolve().parent / "curves"
"""The committed records."""
CONFIG_NAME = "config.json"
_REQUIRED = ("run", "steps", "target_steps", "finished", "evals", "config")


def record_path(records: Path, run_name: str) -> Path:
    """Where the record of run ``run_name`` is kept."""
    return records / f"{run_name}.json"


def _commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() or None


def save_record(run_dir: Path, records: Path = RECORDS) -> Path:
    """Write the record of ``run_dir`` (finished: its summary; unfinished: its curve so far); returns its path.

    The curve is the run's longest (``train.sweep.curve_of``); a ``summary.json`` left from an
    earlier, smaller target does not count as finished.

    Raises:
        FileNotFoundError: naming the file, when the run has no config or no evaluation yet.
        CurveRecordError: the record kept for this run name has a longer curve (it is left as it is).
    """
    from bench.machine import describe

    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: {run_dir} is not a training run directory")
    config = json.loads(config_path.read_text())
    summary_path = run_dir / SUMMARY_NAME
    summary: dict[str, Any] | None = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    evals = curve_of(run_dir)
    if evals is None:
        raise FileNotFoundError(f"{run_dir / EVALS_NAME} is missing or empty: {run_dir} has not evaluated yet")
    if summary is not None and (not summary["evals"] or summary["evals"][-1][0] < evals[-1][0]):
        summary = None  # the summary of an earlier target: the run was resumed toward more steps since
    target = int(config["steps"])
    steps = int(summary["steps"]) if summary is not None else int(evals[-1][0])
    record = {
        "run": run_dir.name,
        "steps": steps,
        "target_steps": target,
        "finished": summary is not None and steps >= target,
        "evals": evals,
        "config": config,
        "wall_time_s": summary.get("wall_time_s") if summary else None,
        "steps_per_s": summary.get("steps_per_s") if summary else None,
        "learning_steps_per_s": summary.get("learning_steps_per_s") if summary else None,
        "machine": describe(),
        "saved_at_commit": _commit(),  # the code that trained the run is at or before it
        "saved": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    records.mkdir(parents=True, exist_ok=True)
    path = record_path(records, run_dir.name)
    kept = load_record(records, run_dir.name)
    if kept is not None and kept["finished"] and kept["evals"] == json.loads(json.dumps(evals)):
        return path  # the same finished curve: its commit and date say when it was first kept
    if kept is not None and kept["evals"] and kept["evals"][-1][0] > evals[-1][0]:
        raise CurveRecordError(
            f"{path} holds a longer curve ({kept['evals'][-1][0]:,.0f} steps) than {run_dir} "
            f"({evals[-1][0]:,.0f}); it is kept. Delete it first to replace it with the shorter one"
        )
    write_text_atomically(path, json.dumps(record, indent=1) + "\n")
    return path


class CurveRecordError(ValueError):
    """A record would lose evaluations its file already holds."""


def load_record(records: Path, run_name: str) -> dict[str, Any] | None:
    """The record of ``run_name``, or ``None`` when there is none; a damaged record is an error naming it."""
    path = record_path(records, run_name)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore it from git or delete it") from error
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; restore it from git or delete it")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description="Keep the curves of training runs in bench/curves.")
    parser.add_argument("dirs", nargs="+", type=Path, help="run directories, or directories of them")
    parser.add_argument("--records", type=Path, default=RECORDS)
    args = parser.parse_args()
    for given in args.dirs:
        runs = [given] if (given / CONFIG_NAME).is_file() else sorted(p for p in given.iterdir() if p.is_dir())
        for run_dir in runs:
            if not (run_dir / CONFIG_NAME).is_file():
                continue
            try:
                path = save_record(run_dir, args.records)
            except (FileNotFoundError, CurveRecordError) as error:
                print(f"skipped: {error}")
                continue
            record = json.loads(path.read_text())
            state = "finished" if record["finished"] else "unfinished"
            print(f"{path}: {record['steps']:,} of {record['target_steps']:,} steps, {state}")


if __name__ == "__main__":
    main()
