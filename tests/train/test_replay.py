"""Replay: shapes and dtypes of what it stores and samples, frame history, n-step arithmetic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from train.replay import Replay, ReplayLayout


def _replay(n_step=3, gamma=0.5, capacity=50, history=3, frame_shape=(4,), dtype="float16", lanes=1, directory=None):
    layout = ReplayLayout(lanes, capacity, frame_shape, dtype, proprio_dim=2, action_dim=1, history=history)
    return Replay(layout, n_step, gamma, directory)


def _frame(value, shape=(4,), dtype="float16"):
    return np.full((1, *shape), value, dtype=dtype)


def _episode(replay, rewards, terminal, first=0.0):
    """Frames are numbered first, first+1, ...; proprio = frame number; action = 0.1 * step."""
    replay.start_episodes(np.array([0]), _frame(first), np.full((1, 2), first, np.float32))
    for i, r in enumerate(rewards):
        last = i == len(rewards) - 1
        v = first + i + 1
        replay.add_steps(
            np.array([[0.1 * i]], np.float32),
            np.array([r]),
            np.array([terminal and last]),
            _frame(v),
            np.full((1, 2), v, np.float32),
        )


def test_stores_and_samples_frames_of_the_declared_shape_and_dtype():
    replay = _replay(frame_shape=(40, 11, 11), dtype="float16")
    replay.start_episodes(np.array([0]), np.zeros((1, 40, 11, 11), np.float16), np.zeros((1, 2), np.float32))
    for _ in range(10):
        replay.add_steps(
            np.zeros((1, 1), np.float32),
            np.ones(1),
            np.zeros(1, bool),
            np.ones((1, 40, 11, 11), np.float16),
            np.zeros((1, 2), np.float32),
        )
    batch = replay.sample(8, np.random.default_rng(0))
    assert batch.frames.shape == (8, 3, 40, 11, 11) and batch.frames.dtype == np.float16
    assert batch.next_frames.shape == (8, 3, 40, 11, 11)
    assert batch.proprio.shape == (8, 2) and batch.proprio.dtype == np.float32
    assert batch.action.shape == (8, 1) and batch.reward.shape == (8,) and batch.discount.shape == (8,)
    assert len(replay) == 10


def test_frame_history_repeats_the_first_frame_at_an_episode_start():
    replay = _replay(n_step=1)
    _episode(replay, [1.0] * 5, terminal=True)
    lane, step = np.array([0, 0, 0]), np.array([0, 1, 4])
    frames = replay._history(lane, step)[..., 0].astype(float)
    np.testing.assert_array_equal(frames, [[0, 0, 0], [0, 0, 1], [2, 3, 4]])


def test_n_step_return_and_discount_by_hand():
    # gamma = 0.5, n = 3, rewards 1, 2, 4, 8 from step 0: R = 1 + 0.5*2 + 0.25*4 = 3, discount 0.125,
    # bootstrapping from the observation of step 3.
    replay = _replay(n_step=3, gamma=0.5)
    _episode(replay, [1.0, 2.0, 4.0, 8.0, 16.0], terminal=False)
    batch = replay._gather(np.array([0]), np.array([0]))
    assert batch.reward[0] == pytest.approx(3.0)
    assert batch.discount[0] == pytest.approx(0.125)
    assert float(batch.next_frames[0, -1, 0]) == 3.0
    assert batch.next_proprio[0, 0] == 3.0


def test_n_step_stops_at_termination_with_zero_discount():
    # Terminates after the reward of step 1: R = 1 + 0.5*2 = 2, no bootstrap.
    replay = _replay(n_step=3, gamma=0.5)
    _episode(replay, [1.0, 2.0], terminal=True)
    batch = replay._gather(np.array([0]), np.array([0]))
    assert batch.reward[0] == pytest.approx(2.0)
    assert batch.discount[0] == 0.0


def test_n_step_stops_at_a_truncated_end_and_bootstraps_from_the_final_observation():
    # Truncated (time limit) after 2 steps: R = 1 + 0.5*2 = 2, bootstrap from the final obs (frame 2).
    replay = _replay(n_step=3, gamma=0.5)
    _episode(replay, [1.0, 2.0], terminal=False)
    _episode(replay, [5.0, 5.0, 5.0], terminal=False, first=10.0)
    batch = replay._gather(np.array([0]), np.array([0]))
    assert batch.reward[0] == pytest.approx(2.0)
    assert batch.discount[0] == pytest.approx(0.25)
    assert float(batch.next_frames[0, -1, 0]) == 2.0


def test_sampling_never_crosses_into_the_next_episode():
    replay = _replay(n_step=3, gamma=0.9, capacity=40)
    for e in range(6):
        _episode(replay, [1.0] * 4, terminal=True, first=100.0 * e)
    batch = replay.sample(256, np.random.default_rng(1))
    # Within an episode frames count up from its first frame (a multiple of 100).
    episode_of = lambda f: np.floor(f.astype(float) / 100)  # noqa: E731
    assert (episode_of(batch.frames[..., 0]) == episode_of(batch.next_frames[..., 0])).all()


def test_wrapped_replay_samples_only_current_slots():
    replay = _replay(n_step=1, capacity=8)
    _episode(replay, [float(i) for i in range(30)], terminal=False)
    batch = replay.sample(64, np.random.default_rng(2))
    assert (batch.frames.astype(float) >= 30 - 8).all()


def test_lanes_must_start_before_adding():
    replay = _replay()
    with pytest.raises(RuntimeError, match="lane 0 has no observation to act from"):
        replay.add_steps(
            np.zeros((1, 1), np.float32), np.ones(1), np.zeros(1, bool), _frame(1), np.zeros((1, 2), np.float32)
        )


def test_memory_mapped_replay_reopens_with_its_state(tmp_path):
    replay = _replay(directory=tmp_path)
    _episode(replay, [1.0, 2.0, 3.0, 4.0], terminal=False)
    replay.flush()
    state = replay.state()
    again = _replay(directory=tmp_path)  # a fresh one would overwrite; resume reopens
    del again
    _episode(replay, [1.0, 2.0, 3.0, 4.0], terminal=False)  # rewrites the same files
    replay.flush()
    reopened = Replay(replay.layout, 3, 0.5, tmp_path, resume=True)
    reopened.load_state(state)
    assert reopened.heads.tolist() == state["heads"]
    with pytest.raises(ValueError, match="holds float16"):
        Replay(ReplayLayout(1, 50, (5,), "float16", 2, 1, 3), 3, 0.5, tmp_path, resume=True)


def _maps_replays(directory=None, steps=300):
    """Two replays fed the same random maps with episode ends: one channels-first, one by cell."""
    rng = np.random.default_rng(0)
    shape = (5, 3, 4)  # (C, h, w), not square, so a transposition mix-up cannot hide
    replays = [
        Replay(ReplayLayout(2, 2 * steps + 4, shape, "float16", 2, 1, 3, maps=maps), 1, 0.9, d)
        for maps, d in ((False, None), (True, directory))
    ]
    first = rng.standard_normal((2, *shape)).astype(np.float16)
    for replay in replays:
        replay.start_episodes(np.arange(2), first, np.zeros((2, 2), np.float32))
    for _ in range(steps):
        frames = rng.standard_normal((2, *shape)).astype(np.float16)
        done = rng.random(2) < 0.05
        for replay in replays:
            replay.add_steps(np.zeros((2, 1), np.float32), np.ones(2, np.float32), done, frames, np.ones((2, 2)))
            if done.any():
                replay.start_episodes(np.flatnonzero(done), frames[done], np.zeros((done.sum(), 2), np.float32))
    return replays


def test_feature_maps_stored_by_cell_sample_the_same_batches_channels_last():
    plain, by_cell = _maps_replays()
    a, b = plain.sample(64, np.random.default_rng(1)), by_cell.sample(64, np.random.default_rng(1))
    for name, x, y in zip(a._fields, a, b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=name)
    # (B, k, C, h, w) seen, (B, h, w, k, C) in memory: a cell's k * C values are adjacent.
    assert b.frames.shape == (64, 3, 5, 3, 4) and b.frames.transpose(0, 3, 4, 1, 2).flags.c_contiguous


def test_a_replay_of_maps_saved_channels_first_is_rewritten_by_cell_on_resume(tmp_path):
    plain, _ = _maps_replays(tmp_path / "new")
    old_dir = tmp_path / "old"
    old = Replay(dataclasses.replace(plain.layout), 1, 0.9, old_dir)  # as replays of maps were saved before
    for name, array in plain._arrays.items():
        old._arrays[name][:] = array
    old.flush()
    state = plain.state()
    del old
    assert (old_dir / "frame.npy").exists()
    resumed = Replay(dataclasses.replace(plain.layout, maps=True), 1, 0.9, old_dir, resume=True)
    resumed.load_state(state)
    assert not (old_dir / "frame.npy").exists() and (old_dir / "frame_cells.npy").exists()
    assert not list(old_dir.glob(".*tmp"))
    a, b = plain.sample(64, np.random.default_rng(2)), resumed.sample(64, np.random.default_rng(2))
    for name, x, y in zip(a._fields, a, b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_a_replay_of_maps_needs_maps():
    with pytest.raises(ValueError, match=r"needs frames \(C, h, w\); got frame_shape \(4,\)"):
        ReplayLayout(1, 10, (4,), "float16", 0, 1, 1, maps=True)


def _every_transition(replay, only=None):
    """Every valid (lane, step) of the replay (or those of ``only``) and the batch gathered at them."""
    if only is None:
        lanes = np.repeat(np.arange(replay.layout.lanes), int(replay.heads.max()))
        steps = np.tile(np.arange(int(replay.heads.max())), replay.layout.lanes)
    else:
        lanes, steps = only
    ok = replay._valid_start(lanes, steps)
    return lanes[ok], steps[ok], replay._gather(lanes[ok], steps[ok])


@pytest.mark.parametrize("maps", [False, True])
def test_a_grown_replay_keeps_every_transition_where_the_checkpoint_expects_it(tmp_path, maps):
    from train.replay import grow_replay, stored_capacity

    shape = (2, 3, 3) if maps else (4,)
    layout = ReplayLayout(2, 9, shape, "float16", proprio_dim=2, action_dim=1, history=3, maps=maps)
    replay = Replay(layout, 2, 0.5, tmp_path / "replay")
    rng = np.random.default_rng(0)
    replay.start_episodes(np.array([0, 1]), rng.standard_normal((2, *shape)).astype(np.float16), np.zeros((2, 2)))
    for i in range(14):  # the 9-slot ring wraps: the oldest steps are gone
        ended = np.array([i == 6, False])
        frames = rng.standard_normal((2, *shape)).astype(np.float16)
        step = np.full((2, 2), i, np.float32)
        replay.add_steps(step[:, :1], step[:, 0], ended, frames, step)
        if ended[0]:
            replay.start_episodes(np.array([0]), rng.standard_normal((1, *shape)).astype(np.float16), np.zeros((1, 2)))
    before = _every_transition(replay)
    state = replay.state()
    replay.flush()
    del replay
    grow_replay(tmp_path / "replay", 30)
    assert stored_capacity(tmp_path / "replay") == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay"]  # nothing half-written left beside it
    grown = Replay(dataclasses.replace(layout, capacity_per_lane=30), 2, 0.5, tmp_path / "replay", resume=True)
    grown.load_state(state)
    after = _every_transition(grown, only=before[:2])
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])  # every one still there
    for field in before[2]._fields:  # and the same, frame history and n-step return included
        assert np.array_equal(getattr(before[2], field), getattr(after[2], field)), field
    # The small ring held back, per lane, the step whose history starts in the slot written next; the
    # grown one keeps that slot, so it may offer that one more, and never one whose history is gone.
    extra = len(_every_transition(grown)[1]) - len(before[1])
    assert 0 <= extra <= layout.lanes
    # It goes on writing without overwriting anything for 30 slots.
    for _ in range(10):
        grown.add_steps(np.zeros((2, 1), np.float32), np.zeros(2), np.zeros(2, bool),
                        np.zeros((2, *shape), np.float16), np.zeros((2, 2), np.float32))  # fmt: skip
    assert set(before[1]) <= set(_every_transition(grown)[1])
    with pytest.raises(ValueError, match="never shrunk"):
        grow_replay(tmp_path / "replay", 20)


def test_a_growth_interrupted_by_a_kill_is_finished_or_undone(tmp_path):
    from train.replay import recover_replay, stored_capacity

    replay = _replay(capacity=9, directory=tmp_path / "replay")
    _episode(replay, [1.0] * 5, terminal=True)
    replay.flush()
    del replay
    growing, old = tmp_path / "replay.growing", tmp_path / "replay.old"
    growing.mkdir()
    (growing / "slot_step.npy").write_bytes(b"half written")
    recover_replay(tmp_path / "replay")  # killed while writing: the new files go, the old replay stays
    assert not growing.exists() and stored_capacity(tmp_path / "replay") == 9
    (tmp_path / "replay").rename(old)
    recover_replay(tmp_path / "replay")  # killed between the two renames: the old replay comes back
    assert not old.exists() and stored_capacity(tmp_path / "replay") == 9
    old.mkdir()
    recover_replay(tmp_path / "replay")  # killed after the swap: only the old directory's removal was left
    assert not old.exists() and stored_capacity(tmp_path / "replay") == 9
