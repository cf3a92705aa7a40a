"""The project's own promises: CI runs exactly the README's commands; packaging lists its packages."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks_after(readme: str, heading: str) -> list[str]:
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_ci_runs_the_readme_install_and_test_commands_word_for_word():
    readme = (ROOT / "README.md").read_text()
    ci_lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    (install,) = _bash_blocks_after(readme, "Install")
    (test,) = _bash_blocks_after(readme, "Test")
    assert install in ci_lines, f"README install command {install!r} is not what .ci/run runs"
    assert test in ci_lines, f"README test command {test!r} is not what .ci/run runs"


def test_packages_are_listed_explicitly():
    pyproject = (ROOT / "pyproject.toml").read_text()
    (listed,) = re.findall(r"^packages = \[(.*)\]$", pyproject, flags=re.M)
    names = sorted(name.strip(' "') for name in listed.split(","))
    assert names == ["agent_runtime", "distill", "models", "pipeline", "train"]


def test_base_install_is_runtime_only():
    requires = importlib.metadata.requires("agent-runtime") or []
    base = {re.split(r"[<>=\[ ;]", r)[0].lower() for r in requires if "extra ==" not in r}
    assert base == {"numpy", "pyzmq", "onnxruntime", "msgpack", "tyro", "typing-extensions"}


BENCH_SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text())


def test_every_bench_script_imports_and_explains_itself(monkeypatch, capsys):
    assert len(BENCH_SCRIPTS) >= 7
    for name in BENCH_SCRIPTS:
        module = importlib.import_module(f"bench.{name}")
        monkeypatch.setattr("sys.argv", [f"bench.{name}", "--help"])
        with pytest.raises(SystemExit) as done:
            module.main()
        assert done.value.code == 0, name
        assert "usage:" in capsys.readouterr().out, name
