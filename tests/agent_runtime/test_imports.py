"""The runtime stays installable on a robot host: it never imports the training stack."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "timm", "gymnasium", "mujoco")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_runtime_imports_no_training_stack():
    loaded = _modules_after("import agent_runtime, agent_runtime.spec, agent_runtime.cli")
    assert not [m for m in HEAVY if m in loaded]


def test_listing_commands_import_no_training_stack():
    code = (
        "import contextlib, io\n"
        "from agent_runtime.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['presets']) == 0\n"
        "    assert main(['encoders']) == 0\n"
    )
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]
