"""DAgger's collection on Ray actors: one actor collects what in-process collection does; several share it."""

from __future__ import annotations

import numpy as np

from distill.runner import run
from tests.distill.test_distill_run import tiny


def _dataset(run_dir) -> dict[str, np.ndarray]:
    return {path.stem: np.load(path) for path in sorted((run_dir / "data" / "dagger").glob("*.npy"))}


def test_one_remote_collector_writes_the_in_process_dataset(ray_local, tmp_path, state_run):
    changes = dict(student="mlp", baseline=False, failure_iterations=0, eval_episodes=2)
    run(tiny(state_run, tmp_path / "local", **changes))
    report = run(tiny(state_run, tmp_path / "remote", collectors=1, **changes))
    local, remote = _dataset(tmp_path / "local"), _dataset(tmp_path / "remote")
    assert local.keys() == remote.keys() and "labels" in local
    for name in local:
        np.testing.assert_array_equal(local[name], remote[name], err_msg=name)
    assert report["dataset_size"] == 2 * 64


def test_two_remote_collectors_share_each_iteration(ray_local, tmp_path, state_run):
    cfg = tiny(state_run, tmp_path / "two", collectors=2, student="mlp", failure_iterations=0, eval_episodes=2)
    report = run(cfg)
    data = _dataset(tmp_path / "two")
    assert report["dataset_size"] == 2 * 64 and len(data["labels"]) == 2 * 64
    assert np.isfinite(data["labels"]).all() and np.abs(data["labels"]).max() <= 1.0
    assert [line["dataset"] for line in report["iterations"]["dagger"]] == [64, 128]
    # The two halves of an iteration come from different episodes: not one half repeated.
    first = data["labels"][:64]
    assert not np.array_equal(first[:32], first[32:])
