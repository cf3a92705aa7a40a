"""Sweeps: settings from text, the grid, a tiny sweep on Ray Tune, and a sweep started again after a stop."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from train.collector import LocalCollector
from train.config import TrainConfig
from train.overrides import apply_overrides, parse_grid, split_values
from train.runner import TrainingStopped, run
from train.sweep import TABLE_NAME, base_config, run_sweep, trial_config, trials
from train.sweep_config import SweepCommand

TINY = ("representation=state", "steps=200", "learning_starts=100", "batch_size=16", "eval_every=100",
        "eval_episodes=1", "final_eval_episodes=1", "checkpoint_every=100", "video=false")  # fmt: skip


def test_settings_are_read_as_their_fields_types():
    cfg = apply_overrides(
        TrainConfig(),
        [("steps", "10_000"), ("sac.feature_shift", "0"), ("updates_per_step", "0.5"), ("video", "false"),
         ("sac.hidden", "[64,64]"), ("failure_below", "none"), ("representation", "state"), ("n_step", "3")],
    )  # fmt: skip
    assert cfg.steps == 10_000 and cfg.sac.feature_shift == 0 and cfg.updates_per_step == 0.5
    assert cfg.video is False and cfg.sac.hidden == (64, 64) and cfg.failure_below is None
    assert cfg.representation == "state" and cfg.n_step == 3
    assert split_values("[1,2],[3]") == ["[1,2]", "[3]"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("stepz", "1"), r"stepz: TrainConfig has no field 'stepz'; its fields: preset, representation"),
        (("sac.nope", "1"), r"sac.nope: SACConfig has no field 'nope'"),
        (("steps.x", "1"), r"steps.x: steps is a single setting"),
        (("sac", "1"), r"sac is a group of settings; set its fields: sac.gamma"),
        (("steps", "1.5"), r"steps is '1.5'; give a whole number"),
        (("representation", "pixels"), r"representation is 'pixels'; choose one of frozen, scratch, state"),
        (("video", "maybe"), r"video is 'maybe'; give true or false"),
        (("sac.hidden", "64"), r"sac.hidden is '64'; give a list"),
        (("sac.gamma", "2"), r"sac.gamma is 2.0; it must be in \(0, 1\]"),  # the config's own check
    ],
)
def test_a_bad_setting_names_the_field_and_what_it_takes(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(TrainConfig(), [override])


def test_settings_that_depend_on_each_other_apply_in_any_order():
    for order in ([("collectors", "24"), ("max_policy_lag", "32")], [("max_policy_lag", "32"), ("collectors", "24")]):
        cfg = apply_overrides(TrainConfig(), order)
        assert (cfg.collectors, cfg.max_policy_lag) == (24, 32)


def test_the_grid_is_the_product_of_the_axes_and_fixed_settings_apply_to_all():
    fixed, points = parse_grid(["steps=100", "sac.feature_shift=0,1", "n_step=1,3"])
    assert fixed == (("steps", "100"),)
    assert points == [
        (("sac.feature_shift", "0"), ("n_step", "1")),
        (("sac.feature_shift", "0"), ("n_step", "3")),
        (("sac.feature_shift", "1"), ("n_step", "1")),
        (("sac.feature_shift", "1"), ("n_step", "3")),
    ]
    assert parse_grid([]) == ((), [()])
    cmd = SweepCommand(presets=("inverted_pendulum", "reacher"), seeds=(0, 1), set=("n_step=1,3",))
    assert len(trials(cmd)) == 8
    assert [t.name for t in trials(cmd)][:2] == ["inverted_pendulum-n_step=1-s0", "inverted_pendulum-n_step=1-s1"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(set=("steps",)), r"--set 'steps': write FIELD=VALUE"),
        (dict(set=("seed=1,2",)), r"--set seed: the sweep sets seed itself"),
        (dict(set=("steps=1", "steps=2")), r"--set gives steps twice"),
        (dict(set=("steps=1,",)), r"an empty value"),
        (dict(set=("n_step=0,1",)), r"n_step is 0; it must be at least 1"),  # every grid point is checked
        (dict(seeds=()), r"seeds is empty"),
        (dict(seeds=(1, 1)), r"repeat a seed"),
        (dict(cpus_per_trial=0.0), r"cpus_per_trial is 0.0"),
        (dict(set=("collectors=2",)), r"--set collectors: a sweep's trials collect in their own process"),
        (dict(set=("threads=4",)), r"--set threads: the sweep sets each trial's threads from --cpus-per-trial"),
        (dict(set=("device=cuda",)), r"--set device: the sweep sets each trial's device from --gpus-per-trial"),
        (dict(presets=("reacher", "reacher")), r"repeat a preset"),
        (dict(set=("sac.feature_shift=0,0",)), r"gives a value twice on one axis"),
    ],
)
def test_a_bad_sweep_is_refused_before_anything_runs(changes, message):
    with pytest.raises(ValueError, match=message):
        SweepCommand(**changes)


def test_a_tiny_sweep_trains_its_trials_and_writes_the_table_and_plots(ray_local, tmp_path):
    cmd = SweepCommand(seeds=(0, 1), set=TINY, out=tmp_path, cpus_per_trial=1.0, at=(100,))
    table = run_sweep(cmd)
    for seed in (0, 1):
        summary = json.loads((tmp_path / f"inverted_pendulum-default-s{seed}" / "summary.json").read_text())
        assert summary["steps"] == 200 and summary["representation"] == "state"
    assert [(r.setting, r.seeds, r.step) for r in table] == [("default", 2, 100), ("default", 2, 200)]
    assert (tmp_path / TABLE_NAME).read_text().startswith("| task | setting | seeds (1 episodes each) |")
    assert (tmp_path / "inverted_pendulum.png").stat().st_size > 0
    assert (tmp_path / "inverted_pendulum-default.png").stat().st_size > 0


def test_a_sweep_started_again_keeps_finished_trials_and_resumes_the_others(ray_local, tmp_path, monkeypatch):
    longer = (*(item for item in TINY if not item.startswith("steps=")), "steps=300")
    cmd = SweepCommand(seeds=(0, 1, 2), set=longer, out=tmp_path, cpus_per_trial=1.0)
    done, stopped, _ = (trial_config(t, base_config(cmd), cmd.out) for t in trials(cmd))
    run(done)  # a trial that finished before the interruption
    finished_at = (done.run_dir / "summary.json").stat().st_mtime_ns
    stop, steps = threading.Event(), [0]
    original = LocalCollector.collect

    def collect_then_stop(self: LocalCollector, count: int, random_actions: bool):
        steps[0] += count
        if steps[0] == 150:  # interrupted while learning, after its first checkpoint (at 100)
            stop.set()
        return original(self, count, random_actions)

    monkeypatch.setattr(LocalCollector, "collect", collect_then_stop)
    with pytest.raises(TrainingStopped) as interrupted:
        run(stopped, stop=stop)
    monkeypatch.undo()
    run_sweep(cmd)
    assert (done.run_dir / "summary.json").stat().st_mtime_ns == finished_at  # not trained again
    resumed = json.loads((stopped.run_dir / "summary.json").read_text())
    assert resumed["steps"] == 300 and resumed["resumed_at_step"] == interrupted.value.step == 150
    third = json.loads((tmp_path / "inverted_pendulum-default-s2" / "summary.json").read_text())
    assert third["steps"] == 300 and third["resumed_at_step"] == 0


def test_report_only_tabulates_what_there_is_without_ray(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    run_dir = Path(tmp_path / "inverted_pendulum-default-s0")
    run_dir.mkdir()
    (run_dir / "evals.json").write_text(json.dumps({"evals": [[100, 5.0, 0.0], [200, 9.0, 0.0]]}))
    table = run_sweep(SweepCommand(seeds=(0, 1), out=tmp_path, report_only=True))
    assert [(r.seeds, r.step, r.mean) for r in table] == [(1, 200, 9.0)]


def test_a_trial_gets_absolute_paths_for_its_run_and_a_preset_file(tmp_path, monkeypatch):
    # Tune runs each trial in a working directory of its own: relative paths would not be found there.
    monkeypatch.chdir(tmp_path)
    task = Path("tasks") / "idp.toml"
    task.parent.mkdir()
    task.write_text(
        (Path(__file__).resolve().parents[2] / "docs" / "presets" / "inverted_double_pendulum.toml").read_text()
    )
    cmd = SweepCommand(presets=(str(task), "inverted_pendulum"), seeds=(0,), out=Path("sweep"))
    by_file, builtin = (trial_config(t, base_config(cmd), cmd.out) for t in trials(cmd))
    assert by_file.preset == str(tmp_path / "tasks" / "idp.toml") and by_file.run_dir.is_absolute()
    assert builtin.preset == "inverted_pendulum"
