"""The collector/learner seam: transitions out, weights in, nothing else shared."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from train.acting import ActingPolicy
from train.collector import LocalCollector, Transitions
from train.config import SACConfig, TrainConfig
from train.envs import build_spec
from train.learner import Learner
from train.presets import get_preset

CFG = TrainConfig(representation="state", batch_size=8, sac=SACConfig(hidden=(16, 16)), seed=3)


def _parts(tmp_path, name, cfg=CFG):
    spec = build_spec(get_preset(cfg.preset), cfg.observation_mode)
    learner = Learner(cfg, spec, None, "float32", 400, tmp_path / name, resume=False, device=torch.device("cpu"))
    return spec, learner, LocalCollector(cfg, spec, None, None, seed=cfg.seed)


def test_chunks_of_any_size_store_the_same_replay(tmp_path):
    replays = []
    for name, chunks in (("ones", [1] * 150), ("mixed", [7, 50, 1, 92])):
        _, learner, collector = _parts(tmp_path, name)
        start = collector.start(seed=11)
        assert start.steps == 0 and start.starts[0].after == -1 and len(start.starts[0].lanes) == 1
        learner.store(start)
        returns: list[float] = []
        for size in chunks:
            got = collector.collect(size, random_actions=True)
            assert isinstance(got, Transitions) and got.action.shape == (size, 1, 1) and got.steps == size
            assert got.next_frames.shape == (size, 1, 4) and got.next_frames.dtype == np.float32
            assert all(0 <= s.after < size for s in got.starts)
            returns += got.episode_returns
            learner.store(got)
        collector.close()
        # InvertedPendulum pays 1 per step alive, so each finished episode's return is its length.
        assert returns and all(r == int(r) >= 1 for r in returns)
        replays.append(learner.replay)
    a, b = (r._arrays for r in replays)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_the_collector_acts_with_the_weights_it_was_given_until_it_gets_new_ones(tmp_path):
    spec, learner, collector = _parts(tmp_path, "r")
    learner.store(collector.start(seed=0))
    learner.store(collector.collect(40, random_actions=True))
    collector.load_policy(learner.weights())
    frames = np.random.default_rng(0).standard_normal((5, 1, 4)).astype(np.float32)
    proprio = np.zeros((5, 0), np.float32)
    mine = learner.agent.act(torch.from_numpy(frames), torch.from_numpy(proprio), deterministic=True)
    np.testing.assert_allclose(collector.policy.act(frames, proprio), mine, atol=1e-6)
    for _ in range(3):
        learner.update()
    after = learner.agent.act(torch.from_numpy(frames), torch.from_numpy(proprio), deterministic=True)
    assert not np.allclose(after, mine)
    np.testing.assert_allclose(collector.policy.act(frames, proprio), mine, atol=1e-6)  # still the old snapshot
    collector.load_policy(learner.weights())
    np.testing.assert_allclose(collector.policy.act(frames, proprio), after, atol=1e-6)
    # The snapshot is a copy: updating the learner never writes into it.
    snapshot = ActingPolicy(CFG, spec, None)
    weights = learner.weights()
    snapshot.load(weights)
    learner.update()
    assert all(torch.equal(v, weights["actor"][k]) for k, v in snapshot.actor.state_dict().items())
    collector.close()


def test_a_collector_resumes_its_random_stream_from_its_state(tmp_path):
    _, _, first = _parts(tmp_path, "a")
    first.start(seed=0)
    first.collect(5, random_actions=True)
    saved = first.state()
    expected = first.collect(5, random_actions=True).action
    _, _, second = _parts(tmp_path, "b")
    second.start(seed=0)
    second.load_state(saved)
    np.testing.assert_array_equal(second.collect(5, random_actions=True).action, expected)
    # Collectors draw apart from each other and from the learner's seed.
    other = LocalCollector(CFG, build_spec(get_preset(CFG.preset), "state"), None, None, seed=CFG.seed, index=1)
    other.start(seed=0)
    assert not np.array_equal(other.collect(5, random_actions=True).action, expected)
    for c in (first, second, other):
        c.close()


def test_two_lanes_in_worker_processes_report_episode_starts_per_lane(tmp_path):
    cfg = dataclasses.replace(CFG, num_envs=2)
    _, learner, collector = _parts(tmp_path, "two", cfg)
    try:
        learner.store(collector.start(seed=5))
        got = collector.collect(120, random_actions=True)
        learner.store(got)
    finally:
        collector.close()
    assert got.action.shape == (120, 2, 1)
    ended = sum(len(s.lanes) for s in got.starts)
    assert ended == len(got.episode_returns) > 0
    # Per lane: its first observation, one slot per step, and one per new episode it began.
    began = np.bincount(np.concatenate([s.lanes for s in got.starts]), minlength=2)
    assert learner.replay.heads.tolist() == (1 + 120 + began).tolist()
