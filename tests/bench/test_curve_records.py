"""Curves kept in the repository: written from run directories, read back when the runs are gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import learning_curves
from bench.curve_records import load_record, save_record
from train.config import TrainConfig

EVALS = [[1000, 10.0, 1.0], [2000, 50.0, 2.0]]


def _fake_run(run_dir: Path, steps: int, evals: list[list[float]], finished: bool) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"steps": steps, "seed": 0}))
    if finished:
        (run_dir / "summary.json").write_text(json.dumps({"steps": steps, "evals": evals, "wall_time_s": 12.5}))
    else:
        (run_dir / "evals.json").write_text(json.dumps({"evals": evals}))


def test_a_finished_run_is_kept_and_read_back(tmp_path):
    run_dir = tmp_path / "runs" / "reacher-state-s0"
    _fake_run(run_dir, 2000, EVALS, finished=True)
    path = save_record(run_dir, tmp_path / "curves")
    assert path == tmp_path / "curves" / "reacher-state-s0.json"
    record = load_record(tmp_path / "curves", "reacher-state-s0")
    assert record is not None
    assert record["finished"] is True and record["steps"] == 2000 and record["target_steps"] == 2000
    assert record["evals"] == EVALS and record["wall_time_s"] == 12.5
    assert record["config"] == {"steps": 2000, "seed": 0} and "cores" in record["machine"]
    assert not list((tmp_path / "curves").glob(".*"))  # no temporary file left beside it


def test_an_unfinished_run_is_kept_as_far_as_it_got(tmp_path):
    run_dir = tmp_path / "reacher-state-s1"
    _fake_run(run_dir, 5000, EVALS, finished=False)
    record = load_record(tmp_path, save_record(run_dir, tmp_path).stem)
    assert record is not None and record["finished"] is False and record["steps"] == 2000


def test_a_run_without_a_curve_or_config_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        save_record(tmp_path / "nothing", tmp_path)
    run_dir = tmp_path / "young"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"steps": 10}))
    with pytest.raises(FileNotFoundError, match=r"evals\.json is missing.*not evaluated yet"):
        save_record(run_dir, tmp_path)


def test_a_damaged_record_is_an_error_that_names_it(tmp_path):
    assert load_record(tmp_path, "absent") is None
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON"):
        load_record(tmp_path, "broken")
    (tmp_path / "partial.json").write_text(json.dumps({"run": "partial", "evals": []}))
    with pytest.raises(ValueError, match=r"partial\.json lacks steps, target_steps, finished, config"):
        load_record(tmp_path, "partial")


def _training(monkeypatch) -> list[TrainConfig]:
    """Replace the trainer by one that writes a finished run of the asked steps; returns the configs it got."""
    trained: list[TrainConfig] = []

    def fake_run(cfg: TrainConfig) -> None:
        trained.append(cfg)
        evals = [[s, float(s), 0.0] for s in range(cfg.eval_every, cfg.target_steps + 1, cfg.eval_every)]
        if not cfg.resume:
            _fake_run(cfg.run_dir, cfg.target_steps, evals, finished=True)
        (cfg.run_dir / "summary.json").write_text(json.dumps({"steps": cfg.target_steps, "evals": evals}))
        (cfg.run_dir / "config.json").write_text(json.dumps({"steps": cfg.target_steps}))

    monkeypatch.setattr(learning_curves, "run", fake_run)
    return trained


def test_a_kept_curve_that_covers_the_budget_is_reused_without_training(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 2000, EVALS, finished=True)
    save_record(tmp_path / "old" / "reacher-state-s0", records)
    out = tmp_path / "runs"
    got = learning_curves.curves(out, "reacher", 2000, "state", [0], 1000, True, 1, records=records)
    assert got == [EVALS] and trained == []
    # The same curve answers a smaller budget; a larger one trains the run again, from the start.
    assert learning_curves.curves(out, "reacher", 1000, "state", [0], 1000, True, 1, records=records) == [EVALS]
    got = learning_curves.curves(out, "reacher", 3000, "state", [0], 1000, True, 1, records=records)
    assert len(trained) == 1 and not trained[0].resume and trained[0].target_steps == 3000
    assert got[0][-1][0] == 3000
    refreshed = load_record(records, "reacher-state-s0")
    assert refreshed is not None and refreshed["steps"] == 3000 and refreshed["finished"]


def test_an_unfinished_kept_curve_is_trained_again_and_every_trained_run_is_kept(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 4000, EVALS, finished=False)
    save_record(tmp_path / "old" / "reacher-state-s0", records)
    out = tmp_path / "runs"
    learning_curves.curves(out, "reacher", 4000, "state", [0, 1], 1000, True, 1, records=records)
    assert [c.seed for c in trained] == [0, 1]
    for seed in (0, 1):
        record = load_record(records, f"reacher-state-s{seed}")
        assert record is not None and record["finished"] and record["steps"] == 4000


def test_report_only_reads_kept_curves_when_the_run_directories_are_gone(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 4000, EVALS, finished=False)
    save_record(tmp_path / "old" / "reacher-state-s0", records)
    got = learning_curves.curves(tmp_path / "runs", "reacher", 4000, "state", [0, 1], 1000, False, 1, records=records)
    assert got == [EVALS] and trained == []  # seed 1 has neither a run nor a record
    assert not (tmp_path / "runs").exists()
