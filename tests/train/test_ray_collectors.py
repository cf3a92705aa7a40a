"""Collectors on Ray actors: lanes joined in order, training with them, a collector killed, a driver resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.cli import main
from train.collector import LocalCollector
from train.config import TrainConfig
from train.envs import build_spec
from train.presets import get_preset
from train.ray_collectors import RayCollectors
from train.runner import TrainingStopped, run


def _cfg(tmp_path: Path, **changes: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        preset="inverted_pendulum", representation="state", collectors=2, steps=300, learning_starts=100,
        batch_size=32, eval_every=300, eval_episodes=1, final_eval_episodes=1, checkpoint_every=300,
        video=False, threads=1, run_dir=tmp_path / "run",
    )  # fmt: skip
    base.update(changes)
    return TrainConfig(**base)


def test_each_actor_fills_its_own_lanes_as_a_local_collector_of_its_index_would(ray_local, tmp_path):
    cfg = _cfg(tmp_path)
    spec = build_spec(get_preset(cfg.preset), "state")
    remote = RayCollectors(cfg, spec, None, seed=7)
    try:
        started = remote.start(seed=100)
        steps = remote.collect(40, random_actions=True)  # long enough for episodes to end and restart
    finally:
        remote.close()
    assert remote.lanes == 2 and steps.reward.shape == (40, 2) and steps.next_frames.shape[:2] == (40, 2)
    ((first,),) = (started.starts,)
    assert first.after == -1 and list(first.lanes) == [0, 1]
    for index in range(2):  # actor i is collector index i, its lane reset with seed + i
        local = LocalCollector(TrainConfig(**{**_fields(cfg), "collectors": 0}), spec, None, None, seed=7, index=index)
        try:
            alone = local.start(seed=100 + index)
            mine = local.collect(40, random_actions=True)
        finally:
            local.close()
        np.testing.assert_array_equal(first.frames[index], alone.starts[0].frames[0])
        np.testing.assert_array_equal(steps.action[:, index], mine.action[:, 0])
        np.testing.assert_array_equal(steps.reward[:, index], mine.reward[:, 0])
        np.testing.assert_array_equal(steps.next_frames[:, index], mine.next_frames[:, 0])
        ends = [s.after for s in steps.starts if index in s.lanes]
        assert ends == [s.after for s in mine.starts] and ends  # the same episode ends, in this lane
    # Episodes that end at the same step in both lanes are one start entry, as the replay reads them.
    afters = [s.after for s in steps.starts]
    assert afters == sorted(set(afters))


def _fields(cfg: TrainConfig) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_training_with_two_remote_collectors_reaches_its_steps_within_the_lag_bound(ray_local, tmp_path):
    summary = run(_cfg(tmp_path, max_policy_lag=8))
    assert summary["steps"] == 300 and summary["updates"] == 201  # as in-process: steps 100 to 300 owe one each
    collection = summary["collection"]
    assert collection["collectors"] == 2 and collection["lanes"] == 2 and collection["round_steps"] == 4
    assert 0 < collection["policy_lag"]["max"] <= 8 and collection["restarts"] == 0
    assert summary["episodes"] > 0 and summary["time_s"]["env"] > 0


def test_a_collector_killed_mid_run_is_replaced_and_the_run_finishes(ray_local, tmp_path, monkeypatch):
    rounds = [0]
    original = RayCollectors.collect

    def collect_and_kill(self: RayCollectors, steps: int, random_actions: bool):
        rounds[0] += 1
        if rounds[0] == 10:  # mid-run (rounds of 8 steps in 2 lanes), while learning
            os.kill(self.pids[0], signal.SIGKILL)
        return original(self, steps, random_actions)

    monkeypatch.setattr(RayCollectors, "collect", collect_and_kill)
    summary = run(_cfg(tmp_path))
    assert summary["steps"] == 300 and summary["updates"] == 201
    assert summary["collection"]["restarts"] == 1


def test_a_stopped_driver_resumes_with_its_collectors_random_state(ray_local, tmp_path, monkeypatch):
    stop, rounds = threading.Event(), [0]
    original = RayCollectors.collect

    def collect_then_stop(self: RayCollectors, steps: int, random_actions: bool):
        rounds[0] += 1
        if rounds[0] == 8:
            stop.set()
        return original(self, steps, random_actions)

    monkeypatch.setattr(RayCollectors, "collect", collect_then_stop)
    cfg = _cfg(tmp_path)
    with pytest.raises(TrainingStopped) as stopped:
        run(cfg, stop=stop)
    assert 0 < stopped.value.step < 300
    summary = run(_cfg(tmp_path, resume=True, steps=None))
    assert summary["steps"] == 300 and summary["resumed_at_step"] == stopped.value.step


def test_pixel_collectors_encode_with_the_drivers_encoder(ray_local, tmp_path):
    cfg = _cfg(tmp_path, representation="frozen", steps=120, learning_starts=100, eval_every=120, checkpoint_every=120)
    summary = run(cfg)
    assert summary["steps"] == 120 and summary["time_s"]["encode"] > 0
    assert summary["encoder"].startswith("tf_efficientnet_lite0")


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="remote --collectors always collect ahead"):
        TrainConfig(collectors=2, collect_ahead=True)
    with pytest.raises(ValueError, match=r"max_policy_lag is 3; with 4 environments .* at least 4"):
        TrainConfig(collectors=2, num_envs=2, max_policy_lag=3)
    with pytest.raises(ValueError, match="collectors is -1"):
        TrainConfig(collectors=-1)


def test_without_ray_the_cli_says_which_extra_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    run_dir = tmp_path / "run"
    code = main(["train", "--collectors", "2", "--representation", "state", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == ["error: --collectors runs collectors on Ray, which is not installed: "
                                 "pip install 'agent-runtime[ray]'"]  # fmt: skip
    assert not run_dir.exists()  # refused before anything was written


def test_training_in_process_never_imports_ray(tmp_path):
    script = (
        "import sys\n"
        "from train.config import TrainConfig\n"
        "from pathlib import Path\n"
        "from train.runner import run\n"
        f"run(TrainConfig(preset='inverted_pendulum', representation='state', steps=60, learning_starts=50,"
        f" batch_size=16, eval_every=60, eval_episodes=1, final_eval_episodes=1, video=False, threads=1,"
        f" run_dir=Path({str(tmp_path / 'run')!r})))\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_collector_killed_between_rounds_is_replaced_at_the_next_call_and_starts_afresh(ray_local, tmp_path):
    cfg = _cfg(tmp_path)
    spec = build_spec(get_preset(cfg.preset), "state")
    remote = RayCollectors(cfg, spec, None, seed=3)
    try:
        remote.start(seed=0)
        remote.collect(4, random_actions=True)
        os.kill(remote.pids[1], signal.SIGKILL)
        saved = remote.state()  # a checkpoint's call: the dead actor is restarted and answers
        assert remote.restarts == 1 and len(saved["remote"]) == 2
        steps = remote.collect(4, random_actions=True)
    finally:
        remote.close()
    # Lane 1's collector lost its episode: it starts a fresh one before this round's steps.
    assert steps.starts[0].after == -1 and list(steps.starts[0].lanes) == [1]
    assert steps.reward.shape == (4, 2)
