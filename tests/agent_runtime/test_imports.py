"""The runtime stays installable on a robot host: it never imports the training stack."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "agent_runtime"
HEAVY = ("torch", "timm", "gymnasium", "mujoco")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


RUNTIME_MODULES = ("agent_runtime", *sorted(f"agent_runtime.{p.stem}" for p in RUNTIME_DIR.glob("[!_]*.py")))
"""Every module of the runtime: a new one is checked without being listed."""

PIPELINE_MODULES = ("pipeline", "pipeline.cli", "pipeline.demo", "pipeline.demo_report")
"""The console script and the demo import train and distill only inside the stages that run them."""


def test_runtime_imports_no_training_stack():
    assert len(RUNTIME_MODULES) > 10
    loaded = _modules_after("import " + ", ".join(RUNTIME_MODULES))
    assert set(RUNTIME_MODULES) <= loaded
    assert not [m for m in (*HEAVY, "onnx") if m in loaded]
    assert not [m for m in loaded if m.split(".")[0] in ("models", "train", "distill", "pipeline", "tyro")]


def test_the_console_script_and_the_demo_import_no_training_stack():
    loaded = _modules_after("import " + ", ".join(PIPELINE_MODULES))
    assert set(PIPELINE_MODULES) <= loaded
    assert not [m for m in (*HEAVY, "onnx") if m in loaded]


def test_serving_and_driving_a_robot_import_no_training_stack():
    """A full hello/act round trip through the server and client, as a robot host runs it."""
    code = (
        "import time\n"
        "import numpy as np\n"
        "from agent_runtime.client import ClientConfig, PolicyClient\n"
        "from agent_runtime.loop import LoopConfig, run_loop\n"
        "from agent_runtime.server import ServerConfig, serve_in_thread\n"
        "from agent_runtime.spec import ActionSpec, ObservationSpec, PolicySpec, Provenance, Quantity\n"
        "spec = PolicySpec((ObservationSpec('state', 'float32', (1,), 'vector', quantities=(Quantity('x', 'm'),)),),\n"
        "    ActionSpec((Quantity('u', 'N'),), (-1.0,), (1.0,)), 0.01, 1, Provenance('t', 'T-v0'))\n"
        "class Policy:\n"
        "    spec = spec\n"
        "    def infer(self, obs):\n"
        "        return obs['state']\n"
        "class Robot:\n"
        "    spec = spec\n"
        "    def reset(self): pass\n"
        "    def observe(self): return {'state': np.full(1, 0.5, np.float32)}\n"
        "    def apply(self, action): assert action[0] == 0.5, action\n"
        "with serve_in_thread(Policy(), ServerConfig(endpoint='tcp://127.0.0.1:*', log_every_s=0)) as server:\n"
        "    with PolicyClient(ClientConfig(endpoint=server.endpoint), spec) as client:\n"
        "        client.connect()\n"
        "        stats = run_loop(Robot(), client, LoopConfig(rate_hz=100, steps=5, deadline_ms=9))\n"
        "assert stats.steps == 5 and stats.hits >= 1, stats\n"
    )
    loaded = _modules_after(code)
    assert not [m for m in (*HEAVY, "onnx") if m in loaded]


def test_listing_commands_import_no_training_stack():
    code = (
        "import contextlib, io\n"
        "from pipeline.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['presets']) == 0\n"
        "    assert main(['encoders']) == 0\n"
        "    try:\n"
        "        main(['demo', '--help'])\n"
        "    except SystemExit as exit_info:\n"
        "        assert exit_info.code == 0\n"
    )
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_a_command_that_needs_the_training_extra_says_how_to_install_it():
    """On a base install (simulated here by hiding the training stack), no traceback: one error line."""
    code = (
        "import sys\n"
        "class NotInstalled:  # finds nothing of the training stack, as on a base install\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'timm', 'gymnasium', 'mujoco', 'onnx'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "from pipeline.cli import main\n"
        "codes = [main(['train', '--steps', '1', '--run-dir', sys.argv[1]]),\n"
        "         main(['robot', '--connect', 'tcp://127.0.0.1:9', '--connect-timeout-s', '0.1'])]\n"
        "print(codes)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", code, tmp + "/run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 1]"
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "Traceback" not in done.stderr
    assert all("pip install '.[train]'" in line and "is not installed" in line for line in errors)
