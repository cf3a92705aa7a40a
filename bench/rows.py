"""Each row of a benchmark in a fresh process, so that one row's threads, allocator or Ray never carry into the next."""

from __future__ import annotations

import json
import subprocess
import sys


def run_row(module: str, name: str, args: list[str]) -> float:
    """Run ``python -m module --row name *args`` and return the ``rate`` its last line prints as JSON.

    Raises:
        RuntimeError: the row failed; the message carries the end of its standard error.
    """
    cmd = [sys.executable, "-m", module, "--row", name, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"row {name} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])


def print_row_result(rate: float) -> None:
    """What a row prints last, for :func:`run_row`."""
    print(json.dumps({"rate": rate}))
