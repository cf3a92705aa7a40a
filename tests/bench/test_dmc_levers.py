"""The levers' report: each lever run beside the base run of the same task and seed, and the base's range."""

from __future__ import annotations

import json
import sys

from bench import dmc_levers
from bench.learning_curves import METHODS


def _run(out, name, evals, finished=True):
    run = out / name
    run.mkdir(parents=True)
    (run / ("summary.json" if finished else "evals.json")).write_text(json.dumps({"evals": evals, "steps": 50_000}))


def test_report_pairs_each_lever_with_the_base_of_its_seed(tmp_path, monkeypatch, capsys):
    levers, bases = tmp_path / "levers", tmp_path / "bases"
    # Agent steps: 50,000 steps are 100,000 frames.
    for seed, final in enumerate([300.0, 350.0, 400.0]):
        _run(bases, f"dmc_cartpole_swingup-frozen-shift-half-s{seed}", [[0, 1.0, 0.0], [50_000, final, 0.0]])
    _run(levers, "dmc_cartpole_swingup-frozen-shift-half-n3-s1", [[0, 1.0, 0.0], [50_000, 500.0, 0.0]])
    _run(levers, "dmc_cartpole_swingup-frozen-shift-half-stage3-s1", [[0, 1.0, 0.0], [25_000, 90.0, 0.0]], False)
    argv = ["dmc_levers", "--tasks", "dmc_cartpole_swingup", "--methods", "frozen-shift-half-n3",
            "frozen-shift-half-stage3", "frozen-shift-half-flare", "--seeds", "1", "--out", str(levers),
            "--base-out", str(bases), "--records", str(tmp_path / "curves"), "--report-only"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    dmc_levers.main()
    printed = capsys.readouterr().out
    row = "| dmc_cartpole_swingup | frozen-shift-half-n3 | 1 | 100,000 | 500.0 | 350.0 | +150.0 | 300.0..400.0 |"
    assert row in printed
    # An unfinished lever run is not counted at a budget it has not reached.
    assert "| frozen-shift-half-stage3 | 1 | 100,000 | not reached | 350.0 | - | 300.0..400.0 |" in printed
    assert "frozen-shift-half-flare" not in printed.split("plot:")[0]  # no run: no row
    assert (levers / "levers_dmc_cartpole_swingup.png").stat().st_size > 0


def test_each_lever_changes_one_setting_of_the_base():
    base = dict(METHODS[dmc_levers.BASE])
    for lever in dmc_levers.LEVERS:
        changes = dict(METHODS[lever])
        changed = {k for k in base.keys() | changes.keys() if base.get(k) != changes.get(k)}
        assert len(changed) == 1, (lever, changed)
