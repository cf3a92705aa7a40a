"""Curves kept in the repository: written from run directories, read back when the runs are gone."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from bench import learning_curves
from bench.curve_records import CurveRecordError, load_record, save_record
from train.config import TrainConfig

EVALS = [[1000, 10.0, 1.0], [2000, 50.0, 2.0]]


def _fake_run(run_dir: Path, steps: int, evals: list[list[float]], finished: bool) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(
        json.dumps({"steps": steps, "seed": 0, "eval_every": 1000, "eval_episodes": 5})
    )
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
    assert record["config"]["steps"] == 2000 and "cores" in record["machine"]
    assert not list((tmp_path / "curves").glob(".*"))  # no temporary file left beside it


def test_keeping_a_finished_run_again_leaves_its_record_as_first_kept(tmp_path):
    run_dir = tmp_path / "runs" / "reacher-state-s0"
    _fake_run(run_dir, 2000, EVALS, finished=True)
    path = save_record(run_dir, tmp_path / "curves")
    first = path.read_text()
    stamped = json.loads(first)
    stamped["saved"] = "an earlier date"
    path.write_text(json.dumps(stamped))
    save_record(run_dir, tmp_path / "curves")
    assert json.loads(path.read_text())["saved"] == "an earlier date"  # not rewritten with today's commit


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
    """Replace the sweep by one that writes a finished run of the asked steps per config; returns the configs."""
    trained: list[TrainConfig] = []

    def fake_train_all(configs: list[TrainConfig], cpus_per_trial: float) -> None:
        for cfg in configs:
            trained.append(cfg)
            evals = [[s, float(s), 0.0] for s in range(cfg.eval_every, cfg.target_steps + 1, cfg.eval_every)]
            if not cfg.resume:
                _fake_run(cfg.run_dir, cfg.target_steps, evals, finished=True)
            (cfg.run_dir / "summary.json").write_text(json.dumps({"steps": cfg.target_steps, "evals": evals}))
            config = {"steps": cfg.target_steps, "eval_every": cfg.eval_every, "eval_episodes": cfg.eval_episodes}
            (cfg.run_dir / "config.json").write_text(json.dumps(config))

    monkeypatch.setattr(learning_curves, "train_all", fake_train_all)
    return trained


def _curves(out: Path, steps: int, seeds: list[int], train: bool, records: Path) -> list[list[list[float]]]:
    found = learning_curves.learning_curves(
        out, [("reacher", steps)], ["state"], seeds, 1000, train, 1, records=records
    )
    return found[("reacher", "state")]


def test_a_kept_curve_that_covers_the_budget_is_reused_without_training(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 2000, EVALS, finished=True)
    save_record(tmp_path / "old" / "reacher-state-s0", records)
    out = tmp_path / "runs"
    assert _curves(out, 2000, [0], True, records) == [EVALS] and trained == []
    # The same curve answers a smaller budget; a larger one trains the run again, from the start.
    assert _curves(out, 1000, [0], True, records) == [EVALS]
    got = _curves(out, 3000, [0], True, records)
    assert len(trained) == 1 and not trained[0].resume and trained[0].target_steps == 3000
    assert got[0][-1][0] == 3000
    refreshed = load_record(records, "reacher-state-s0")
    assert refreshed is not None and refreshed["steps"] == 3000 and refreshed["finished"]


def test_an_unfinished_kept_curve_is_trained_again_and_every_trained_run_is_kept(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 4000, EVALS, finished=False)
    save_record(tmp_path / "old" / "reacher-state-s0", records)
    _curves(tmp_path / "runs", 4000, [0, 1], True, records)
    assert [c.seed for c in trained] == [0, 1]
    assert all(c.representation == "state" and c.run_dir.name == f"reacher-state-s{c.seed}" for c in trained)
    for seed in (0, 1):
        record = load_record(records, f"reacher-state-s{seed}")
        assert record is not None and record["finished"] and record["steps"] == 4000


def test_report_only_reads_kept_curves_when_the_run_directories_are_gone(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 4000, EVALS, finished=False)
    save_record(tmp_path / "old" / "reacher-state-s0", records)
    got = _curves(tmp_path / "runs", 4000, [0, 1], False, records)
    assert got == [EVALS] and trained == []  # seed 1 has neither a run nor a record
    assert not (tmp_path / "runs").exists()


def test_a_summary_left_from_a_smaller_target_does_not_hide_the_curve_since(tmp_path):
    run_dir = tmp_path / "reacher-state-s0"
    _fake_run(run_dir, 2000, EVALS, finished=True)
    # Resumed toward 4,000 steps: config.json and evals.json move on, summary.json stays at 2,000.
    longer = [*EVALS, [3000, 70.0, 1.0]]
    (run_dir / "config.json").write_text(json.dumps({"steps": 4000, "eval_every": 1000, "eval_episodes": 5}))
    (run_dir / "evals.json").write_text(json.dumps({"evals": longer}))
    record = load_record(tmp_path, save_record(run_dir, tmp_path).stem)
    assert record is not None and record["evals"] == longer
    assert record["steps"] == 3000 and record["target_steps"] == 4000 and record["finished"] is False
    assert record["wall_time_s"] is None  # the old summary's figures are not this curve's
    assert learning_curves.curve_of(run_dir) == longer


def test_a_kept_curve_is_never_replaced_by_a_shorter_one(tmp_path):
    records = tmp_path / "curves"
    _fake_run(tmp_path / "long" / "reacher-state-s0", 5000, [*EVALS, [3000, 70.0, 1.0]], finished=False)
    path = save_record(tmp_path / "long" / "reacher-state-s0", records)
    before = path.read_text()
    _fake_run(tmp_path / "short" / "reacher-state-s0", 5000, EVALS, finished=False)  # started again elsewhere
    with pytest.raises(CurveRecordError, match=r"holds a longer curve \(3,000 steps\).*Delete it first"):
        save_record(tmp_path / "short" / "reacher-state-s0", records)
    assert path.read_text() == before


def test_an_unfinished_kept_curve_that_reaches_the_budget_is_reused_without_training(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 9000, EVALS, finished=False)  # stopped at 2,000 of 9,000
    save_record(tmp_path / "old" / "reacher-state-s0", records)
    assert _curves(tmp_path / "runs", 2000, [0], True, records) == [EVALS] and trained == []
    assert load_record(records, "reacher-state-s0")["steps"] == 2000  # type: ignore[index]


def test_a_run_directory_that_got_past_the_budget_is_reused_without_training(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    out = tmp_path / "runs"
    _fake_run(out / "reacher-state-s0", 9000, EVALS, finished=False)  # on its way to 9,000 steps
    assert _curves(out, 1000, [0], True, tmp_path / "curves") == [EVALS] and trained == []


def test_a_run_directory_that_evaluates_otherwise_is_refused_by_name(tmp_path, monkeypatch):
    _training(monkeypatch)
    out = tmp_path / "runs"
    _fake_run(out / "reacher-state-s0", 9000, EVALS, finished=False)
    with pytest.raises(ValueError, match=r"reacher-state-s0 evaluates every 1000 agent steps on 5 episodes, this "
                                         r"benchmark every 500 on 5.*use another --out"):  # fmt: skip
        learning_curves.learning_curves(out, [("reacher", 1000)], ["state"], [0], 500, True, 1, records=None)


def test_a_kept_record_that_evaluates_otherwise_is_refused_for_training_and_reported_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    trained = _training(monkeypatch)
    records = tmp_path / "curves"
    _fake_run(tmp_path / "old" / "reacher-state-s0", 9000, [*EVALS, [3000, 70.0, 1.0]], finished=False)
    save_record(tmp_path / "old" / "reacher-state-s0", records)  # evaluated every 1000 steps
    with pytest.raises(ValueError, match=r"curves/reacher-state-s0\.json evaluates every 1000 agent steps.*"
                                         r"delete the record"):  # fmt: skip
        learning_curves.learning_curves(tmp_path / "runs", [("reacher", 4000)], ["state"], [0], 500, True, 1,
                                        records=records)  # fmt: skip
    assert trained == []  # refused before hours of training whose curve would not be kept
    got = learning_curves.learning_curves(tmp_path / "runs", [("reacher", 4000)], ["state"], [0], 500, False, 1,
                                          records=records)  # fmt: skip
    assert got[("reacher", "state")] == [[*EVALS, [3000, 70.0, 1.0]]] and "reported as it is" in caplog.text


def test_a_seed_given_twice_is_refused(tmp_path, monkeypatch):
    trained = _training(monkeypatch)
    with pytest.raises(ValueError, match=r"seeds 1 given more than once"):
        _curves(tmp_path / "runs", 1000, [0, 1, 1], True, tmp_path / "curves")
    assert trained == []


def test_a_sweep_stopped_by_sigterm_keeps_the_curve_of_every_run_as_far_as_it_got(tmp_path, monkeypatch):
    def stopped_sweep(configs: list[TrainConfig], cpus_per_trial: float) -> None:
        _fake_run(configs[0].run_dir, configs[0].target_steps, EVALS, finished=False)
        config = {"steps": configs[0].target_steps, "eval_every": 1000, "eval_episodes": 5}
        (configs[0].run_dir / "config.json").write_text(json.dumps(config))
        os.kill(os.getpid(), signal.SIGTERM)  # as a session's or a job's end sends it
        time.sleep(5)  # never reached: the signal unwinds at once (a deadline if it did not)
        raise AssertionError("SIGTERM did not stop the sweep")

    monkeypatch.setattr(learning_curves, "train_all", stopped_sweep)
    records = tmp_path / "curves"
    with pytest.raises(KeyboardInterrupt):
        _curves(tmp_path / "runs", 4000, [0, 1], True, records)
    record = load_record(records, "reacher-state-s0")
    assert record is not None and record["evals"] == EVALS and record["finished"] is False
    assert load_record(records, "reacher-state-s1") is None  # it never evaluated
