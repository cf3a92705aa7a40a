"""The DrQ-v2 comparison: anchors read per seed, values at a frame budget, IQM for both sides, the table."""

from __future__ import annotations

import json
import re
import sys

import pytest

from bench import dmc_vs_drqv2
from bench.dmc_vs_drqv2 import anchor_curves, value_at

ANCHOR = """,agent,task,seed,frame,episode_reward,hour
0,DrQ-v2,cartpole_swingup,1,0,10.0,0.0
1,DrQ-v2,cartpole_swingup,1,100000,600.0,0.1
2,DrQ-v2,cartpole_swingup,2,0,12.0,0.0
3,DrQ-v2,cartpole_swingup,2,100000,800.0,0.1
4,DrQ-v2,cartpole_swingup,3,0,11.0,0.0
5,DrQ-v2,cartpole_swingup,3,100000,700.0,0.1
6,DrQ-v2,cartpole_swingup,4,0,9.0,0.0
7,DrQ-v2,cartpole_swingup,4,100000,300.0,0.1
"""


@pytest.mark.skipif(not dmc_vs_drqv2.ANCHORS.is_dir(), reason="../shared/anchors/drqv2 is not beside this checkout")
def test_the_released_curves_of_every_task_are_there():
    for task in dmc_vs_drqv2.TASKS:
        curves = anchor_curves(task)
        assert len(curves) >= 8 and all(c[0][0] == 0.0 for c in curves.values())


def test_value_at_takes_the_last_evaluation_a_run_reached():
    curve = [(0.0, 1.0), (20_000.0, 5.0), (40_000.0, 9.0)]
    assert value_at(curve, 30_000) == 5.0 and value_at(curve, 40_000) == 9.0
    assert value_at(curve, 50_000) is None  # the run has not got that far
    # DrQ-v2's runs end one evaluation short of 1M frames (at 980k): read with one interval's grace.
    assert value_at(curve, 60_000, grace=20_000) == 9.0 and value_at(curve, 61_000, grace=20_000) is None


def test_an_anchor_file_without_its_columns_or_evaluations_is_named(tmp_path):
    (tmp_path / "dmc_cup_catch.csv").write_text(",agent,task,frame,reward\n0,DrQ-v2,cup_catch,0,1.0\n")
    with pytest.raises(ValueError, match=r"dmc_cup_catch\.csv has no column seed, episode_reward"):
        anchor_curves("dmc_cup_catch", tmp_path)
    (tmp_path / "dmc_cup_catch.csv").write_text(ANCHOR.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=r"dmc_cup_catch\.csv holds no evaluations"):
        anchor_curves("dmc_cup_catch", tmp_path)


def test_report_only_compares_ours_with_drqv2_at_each_budget(tmp_path, monkeypatch, capsys):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "dmc_cartpole_swingup.csv").write_text(ANCHOR)
    out = tmp_path / "runs"
    for seed, final in enumerate([400.0, 500.0, 900.0]):
        run = out / f"dmc_cartpole_swingup-frozen-shift-half-s{seed}"
        run.mkdir(parents=True)
        # Agent steps: 50,000 steps are 100,000 frames. Seed 2 is unfinished, its evals.json as far as it got.
        evals = [[0, 10.0, 0.0], [25_000, 100.0, 0.0], [50_000, final, 0.0]]
        name = "evals.json" if seed == 2 else "summary.json"
        (run / name).write_text(json.dumps({"evals": evals, "steps": 50_000}))
    argv = ["dmc_vs_drqv2", "--tasks", "dmc_cartpole_swingup", "--seeds", "0", "1", "2", "--out", str(out),
            "--anchors", str(anchors), "--records", str(tmp_path / "curves"), "--frames", "100000", "500000",
            "--report-only"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    dmc_vs_drqv2.main()
    printed = capsys.readouterr().out
    row = re.search(r"\| dmc_cartpole_swingup \| 100,000 \| 400.0, 500.0, 900.0 \| ([\d.]+); IQM ([\d.]+) .*"
                    r"\| ([\d.]+); IQM ([\d.]+) \[.*\(4 seeds\) \| ([\d.]+) \|", printed)  # fmt: skip
    assert row, printed
    ours_mean, ours_iqm, drq_mean, drq_iqm, ratio = (float(v) for v in row.groups())
    assert ours_mean == pytest.approx(600.0)  # (400 + 500 + 900) / 3; with 3 seeds rliable's IQM is the mean too
    assert ours_iqm == pytest.approx(600.0)
    assert drq_mean == pytest.approx(600.0)  # (600 + 800 + 700 + 300) / 4
    assert drq_iqm == pytest.approx(650.0)  # the middle two of 300, 600, 700, 800
    assert ratio == pytest.approx(1.0)
    assert "| dmc_cartpole_swingup | 500,000 | - | not reached | not reached | - |" in printed
    assert (out / "dmc_vs_drqv2.png").stat().st_size > 0
