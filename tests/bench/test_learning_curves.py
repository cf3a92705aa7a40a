"""The learning-curve benchmark's table: IQM with a bootstrap interval over seeds, beside the mean."""

from __future__ import annotations

import json
import re
import sys

import pytest

from bench import learning_curves


def test_report_only_tabulates_iqm_and_its_interval_over_seeds(tmp_path, monkeypatch, capsys):
    finals = [100.0, 900.0, 1000.0, 1000.0]  # four seeds, one of them far behind
    for seed, final in enumerate(finals):
        run = tmp_path / f"inverted_pendulum-state-s{seed}"
        run.mkdir()
        evals = [[1000, 10.0, 0.0], [2000, final, 0.0]]
        (run / "evals.json").write_text(json.dumps({"evals": evals}))
    argv = ["learning_curves", "--task", "inverted_pendulum:2000", "--method", "state", "--seeds", "0", "1", "2", "3",
            "--out", str(tmp_path), "--records", str(tmp_path / "curves"), "--report-only", "--at", "1000"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    learning_curves.main()
    out = capsys.readouterr().out
    assert "| seeds (5 episodes each) |" in out
    rows = re.findall(
        r"\| inverted_pendulum \| state \| 4 \| (\d+) \| ([\d.]+) \| ([\d.]+) \[([\d.]+), ([\d.]+)\] \|", out
    )
    assert [r[0] for r in rows] == ["1000", "2000"]
    mean, iqm, low, high = (float(v) for v in rows[1][1:])
    assert mean == pytest.approx(750.0)  # (100 + 900 + 1000 + 1000) / 4
    assert iqm == pytest.approx(950.0)  # rliable trims a quarter each side: the middle two, 900 and 1000
    assert low <= iqm <= high <= 1000.0
    assert (tmp_path / "learning_curves_inverted_pendulum.png").stat().st_size > 0


def test_every_method_is_a_valid_run_named_after_it(tmp_path):
    for method in learning_curves.METHODS:
        cfg = learning_curves.run_config(tmp_path, "dmc_cheetah_run", 1000, method, 2, 500, 1, 10)
        assert cfg.run_dir.name == f"dmc_cheetah_run-{method}-s2" and cfg.seed == 2 and cfg.device == "cpu"
        assert (cfg.eval_every, cfg.eval_episodes, cfg.final_eval_episodes, cfg.video) == (500, 10, 10, False)
