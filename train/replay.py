"""Replay of transitions, one lane per vector environment, with frame history and n-step returns.

Each step stores one *frame* (a frozen encoder's features of the newest camera frame in half
precision, a raw uint8 camera frame for the from-scratch baseline, or a state vector) plus the
proprio vector, the action taken, the reward and whether the episode terminated. The frame history
(``k`` frames, oldest first, repeated at an episode's start) is rebuilt at sampling time, as DrQ-v2
does, so memory grows with one frame per step, not ``k``.

Storage can live in memory-mapped ``.npy`` files in the run directory, so a resumed run keeps its
replay. Every slot records the absolute step it holds (``slot_step``): a slot overwritten after the
last checkpoint no longer matches and is never sampled as stale data. A saved replay can be laid out
again with more slots (:func:`grow_replay`), so a run trained further keeps everything it collected.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agent_runtime.files import replacing

MAPS_FILE = "frame_cells"
"""The replay file of feature-map frames, stored cell by cell (see :attr:`ReplayLayout.maps`)."""


class Batch(NamedTuple):
    """A batch of n-step transitions (numpy; the agent moves it to torch).

    ``discount`` is ``gamma ** n`` for the number of steps actually summed, or 0 where the episode
    terminated within them (so the target is ``reward + discount * V(next)``).
    """

    frames: np.ndarray  # (B, k, *frame_shape), frame dtype; feature maps are a channels-last view
    proprio: np.ndarray  # float32 (B, P)
    action: np.ndarray  # float32 (B, A), in [-1, 1]
    reward: np.ndarray  # float32 (B,), discounted n-step sum
    discount: np.ndarray  # float32 (B,)
    next_frames: np.ndarray  # (B, k, *frame_shape)
    next_proprio: np.ndarray  # float32 (B, P)


@dataclass(frozen=True)
class ReplayLayout:
    """Shapes and sizes of a replay. Saved with the run so a resume reopens the same files."""

    lanes: int
    capacity_per_lane: int
    frame_shape: tuple[int, ...]
    frame_dtype: str
    proprio_dim: int
    action_dim: int
    history: int
    maps: bool = False
    """Frames are spatial feature maps ``(C, h, w)``. They are stored cell by cell, ``(h, w, C)``, so
    that a sampled frame history comes out channels-last, ``(B, h, w, k, C)`` in memory, seen as
    ``(B, k, C, h, w)``: the layout the feature shift gathers whole cells from and the conv neck
    reads, with no transposing copy (two strided half-precision copies cost 20 ms of a 55 ms update)."""

    def __post_init__(self) -> None:
        if self.lanes < 1 or self.capacity_per_lane < self.history + 2:
            raise ValueError(f"replay needs at least one lane of capacity > history + 1; got {self}")
        if self.maps and len(self.frame_shape) != 3:
            raise ValueError(f"replay of feature maps needs frames (C, h, w); got frame_shape {self.frame_shape}")

    @property
    def stored_frame_shape(self) -> tuple[int, ...]:
        """One frame as stored: ``(h, w, C)`` for feature maps, else :attr:`frame_shape`."""
        if self.maps:
            c, h, w = self.frame_shape
            return (h, w, c)
        return self.frame_shape


class Replay:
    """See the module docstring.

    Args:
        layout: shapes and sizes.
        n_step: steps summed into each return.
        gamma: per-step discount.
        directory: where to keep memory-mapped arrays; ``None`` keeps them in RAM.
        resume: reopen existing arrays in ``directory`` (with ``load_state``) instead of new ones.
    """

    _ARRAYS = ("frame", "proprio", "action", "reward", "terminated", "has_action", "episode_start", "slot_step")

    def __init__(
        self, layout: ReplayLayout, n_step: int, gamma: float, directory: Path | None = None, resume: bool = False
    ) -> None:
        if n_step < 1:
            raise ValueError(f"n_step is {n_step}; it must be at least 1")
        self.layout, self.n_step, self.gamma = layout, n_step, gamma
        lanes, cap = layout.lanes, layout.capacity_per_lane
        specs: dict[str, tuple[tuple[int, ...], Any]] = {
            "frame": ((lanes, cap, *layout.stored_frame_shape), np.dtype(layout.frame_dtype)),
            "proprio": ((lanes, cap, layout.proprio_dim), np.float32),
            "action": ((lanes, cap, layout.action_dim), np.float32),
            "reward": ((lanes, cap), np.float32),
            "terminated": ((lanes, cap), np.bool_),
            "has_action": ((lanes, cap), np.bool_),
            "episode_start": ((lanes, cap), np.int64),
            "slot_step": ((lanes, cap), np.int64),
        }
        self._arrays: dict[str, np.ndarray] = {}
        if layout.maps and resume and directory is not None:
            _store_maps_by_cell(directory, specs["frame"][0], specs["frame"][1])
        for name, (shape, dtype) in specs.items():
            file = MAPS_FILE if name == "frame" and layout.maps else name
            self._arrays[name] = _open(directory, file, shape, dtype, resume)
        if not resume:
            self._arrays["slot_step"][:] = -1
        self.heads = np.zeros(lanes, dtype=np.int64)  # next absolute step to write, per lane

    # -- writing --------------------------------------------------------------------------------

    def start_episodes(self, lanes: np.ndarray, frames: np.ndarray, proprio: np.ndarray) -> None:
        """Write the first observation of a new episode in each of ``lanes``."""
        for i, lane in enumerate(lanes):
            step = int(self.heads[lane])
            self._write_obs(lane, step, frames[i], proprio[i], episode_start=step)

    def add_steps(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        next_frames: np.ndarray,
        next_proprio: np.ndarray,
    ) -> None:
        """Record one step in every lane.

        Each lane gets the action taken from its last observation, the reward, whether the episode
        terminated, and the observation that followed (the final one if the episode ended; start the
        next episode with :meth:`start_episodes`).
        """
        a, cap = self._arrays, self.layout.capacity_per_lane
        for lane in range(self.layout.lanes):
            prev = int(self.heads[lane]) - 1
            if prev < 0 or a["slot_step"][lane, prev % cap] != prev:
                raise RuntimeError(f"lane {lane} has no observation to act from; call start_episodes first")
            slot = prev % cap
            a["action"][lane, slot] = actions[lane]
            a["reward"][lane, slot] = rewards[lane]
            a["terminated"][lane, slot] = terminated[lane]
            a["has_action"][lane, slot] = True
            start = int(a["episode_start"][lane, slot])
            self._write_obs(lane, prev + 1, next_frames[lane], next_proprio[lane], episode_start=start)

    def _write_obs(self, lane: int, step: int, frame: np.ndarray, proprio: np.ndarray, episode_start: int) -> None:
        a, slot = self._arrays, step % self.layout.capacity_per_lane
        a["frame"][lane, slot] = frame.transpose(1, 2, 0) if self.layout.maps else frame
        a["proprio"][lane, slot] = proprio
        a["has_action"][lane, slot] = False
        a["terminated"][lane, slot] = False
        a["episode_start"][lane, slot] = episode_start
        a["slot_step"][lane, slot] = step
        self.heads[lane] = step + 1

    # -- reading --------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Transitions stored (slots holding an action and the observation after it, across lanes)."""
        return int(np.count_nonzero(self._arrays["has_action"]))

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """``batch_size`` n-step transitions drawn uniformly from the valid ones."""
        lanes = np.empty(batch_size, dtype=np.int64)
        steps = np.empty(batch_size, dtype=np.int64)
        filled = 0
        for _ in range(1000):
            lane = rng.integers(self.layout.lanes, size=batch_size)
            low = np.maximum(self.heads[lane] - self.layout.capacity_per_lane, 0)
            high = self.heads[lane] - 1  # the newest slot has no action yet
            ok = high > low
            step = low + (rng.random(batch_size) * np.maximum(high - low, 1)).astype(np.int64)
            ok &= self._valid_start(lane, step)
            take = min(int(ok.sum()), batch_size - filled)
            lanes[filled : filled + take] = lane[ok][:take]
            steps[filled : filled + take] = step[ok][:take]
            filled += take
            if filled == batch_size:
                return self._gather(lanes, steps)
        raise RuntimeError(f"replay holds too few valid transitions ({len(self)}) to sample {batch_size}")

    def _valid_start(self, lane: np.ndarray, step: np.ndarray) -> np.ndarray:
        a, cap = self._arrays, self.layout.capacity_per_lane
        slot, next_slot = step % cap, (step + 1) % cap
        oldest = np.maximum(step - self.layout.history + 1, a["episode_start"][lane, slot])
        return (
            (a["slot_step"][lane, slot] == step)
            & a["has_action"][lane, slot]
            & (a["slot_step"][lane, next_slot] == step + 1)
            # the frame history must not reach into slots overwritten (or, in a grown replay, never kept)
            & (a["slot_step"][lane, oldest % cap] == oldest)
            & (oldest > self.heads[lane] - cap)
        )

    def _history(self, lane: np.ndarray, step: np.ndarray) -> np.ndarray:
        """Frames (B, k, *frame_shape) ending at ``step``, repeating the episode's first frame."""
        a, cap, k = self._arrays, self.layout.capacity_per_lane, self.layout.history
        start = a["episode_start"][lane, step % cap]
        offsets = np.arange(k - 1, -1, -1)
        steps = np.maximum(step[:, None] - offsets[None, :], start[:, None])
        if not self.layout.maps:
            return a["frame"][lane[:, None], steps % cap]
        # Rows of (slot, cell): cell i of frame j of sample b goes to [b, i, j], so the result is
        # (B, h, w, k, C) in memory, returned as a (B, k, C, h, w) view.
        h, w, c = self.layout.stored_frame_shape
        cells = a["frame"].reshape(-1, c)
        slots = lane[:, None] * cap + steps % cap  # (B, k)
        rows = slots[:, None, :] * (h * w) + np.arange(h * w)[None, :, None]  # (B, h*w, k)
        return np.take(cells, rows.reshape(-1), axis=0).reshape(len(step), h, w, k, c).transpose(0, 3, 4, 1, 2)

    def _gather(self, lane: np.ndarray, step: np.ndarray) -> Batch:
        a, cap = self._arrays, self.layout.capacity_per_lane
        reward = np.zeros(len(step), dtype=np.float32)
        discount = np.ones(len(step), dtype=np.float32)
        alive = np.ones(len(step), dtype=bool)
        last = step.copy()  # the step whose observation the target bootstraps from
        for i in range(self.n_step):
            cur = step + i
            slot = cur % cap
            reward += np.where(alive, discount * a["reward"][lane, slot], 0.0).astype(np.float32)
            discount = np.where(alive, discount * self.gamma, discount).astype(np.float32)
            last = np.where(alive, cur + 1, last)
            ended = a["terminated"][lane, slot]
            discount = np.where(alive & ended, 0.0, discount).astype(np.float32)
            # go on only while the next observation was acted from, and that action is recorded
            nxt = (cur + 1) % cap
            more = (a["slot_step"][lane, nxt] == cur + 1) & a["has_action"][lane, nxt] & (cur + 2 < self.heads[lane])
            alive &= ~ended & more
        slot = step % cap
        last_slot = last % cap
        return Batch(
            frames=self._history(lane, step),
            proprio=a["proprio"][lane, slot],
            action=a["action"][lane, slot],
            reward=reward,
            discount=discount,
            next_frames=self._history(lane, last),
            next_proprio=a["proprio"][lane, last_slot],
        )

    # -- persistence ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write memory-mapped arrays to disk (before a checkpoint records the heads)."""
        for array in self._arrays.values():
            if isinstance(array, np.memmap):
                array.flush()

    def state(self) -> dict[str, list[int]]:
        """What a checkpoint must record to reopen this replay."""
        return {"heads": [int(h) for h in self.heads]}

    def load_state(self, state: dict[str, list[int]]) -> None:
        """Restore the write positions saved by :meth:`state`."""
        heads = np.asarray(state["heads"], dtype=np.int64)
        if heads.shape != (self.layout.lanes,):
            raise ValueError(f"replay state has {heads.size} lanes; this replay has {self.layout.lanes}")
        self.heads = heads


def stored_capacity(directory: Path) -> int | None:
    """Slots per lane of the replay saved in ``directory`` (after :func:`recover_replay`); None if none is."""
    path = directory / "slot_step.npy"
    if not path.is_file():
        return None
    return int(np.load(path, mmap_mode="r").shape[1])


def recover_replay(directory: Path) -> None:
    """Finish or undo a :func:`grow_replay` that a kill interrupted, so ``directory`` holds one whole replay.

    Growing writes the new files into ``<directory>.growing`` and then swaps the directories through
    ``<directory>.old``. Before the swap the old replay is whole and the half-written one is removed;
    between its two renames the old replay is put back; after them only the old one's removal is left.
    """
    growing, old = _grow_paths(directory)
    if growing.exists():
        shutil.rmtree(growing)
    if old.exists():
        if directory.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, directory)


def grow_replay(directory: Path, capacity_per_lane: int) -> None:
    """Lay the replay saved in ``directory`` out again with ``capacity_per_lane`` slots per lane (more).

    Every stored slot moves to the slot its absolute step takes in the larger ring, so the write
    positions saved in the checkpoint stay valid and nothing stored is lost. The new files are
    complete before they replace the old ones (see :func:`recover_replay` for a kill in between).

    Raises:
        ValueError: the replay holds more slots than asked, or its files disagree on their size.
    """
    recover_replay(directory)
    current = stored_capacity(directory)
    if current is None or current == capacity_per_lane:
        return
    if current > capacity_per_lane:
        raise ValueError(f"{directory} holds {current} slots per lane; a replay is never shrunk to {capacity_per_lane}")
    growing, old = _grow_paths(directory)
    growing.mkdir()
    steps = np.load(directory / "slot_step.npy", mmap_mode="r")
    for path in sorted(directory.glob("*.npy")):
        source = np.load(path, mmap_mode="r")
        if source.shape[:2] != steps.shape:
            raise ValueError(f"{path} holds {source.shape}; the replay's other files hold {steps.shape} (lanes, slots)")
        shape = (source.shape[0], capacity_per_lane, *source.shape[2:])
        target = np.lib.format.open_memmap(growing / path.name, mode="w+", dtype=source.dtype, shape=shape)
        if path.name == "slot_step.npy":
            target[:] = -1  # slots never written
        for lane in range(source.shape[0]):
            for start in range(0, current, 4096):
                held = np.asarray(steps[lane, start : start + 4096])
                kept = held >= 0
                target[lane, held[kept] % capacity_per_lane] = source[lane, start : start + 4096][kept]
        target.flush()
        del target, source
    del steps
    os.replace(directory, old)
    os.replace(growing, directory)
    shutil.rmtree(old)


def _grow_paths(directory: Path) -> tuple[Path, Path]:
    return directory.with_name(f"{directory.name}.growing"), directory.with_name(f"{directory.name}.old")


def _store_maps_by_cell(directory: Path, shape: tuple[int, ...], dtype: Any) -> None:
    """Rewrite feature maps that a replay saved channels-first (before 2026-12-01) cell by cell, once.

    ``frame.npy``, ``(lanes, cap, C, h, w)``, becomes ``frame_cells.npy``, ``(lanes, cap, h, w, C)``:
    written under a temporary name, flushed, renamed, and only then is the old file removed, so a kill
    during the rewrite leaves the old file as it was and the next resume starts the rewrite again.
    """
    old_path, new_path = directory / "frame.npy", directory / f"{MAPS_FILE}.npy"
    if new_path.exists() or not old_path.exists():
        return
    lanes, cap, h, w, c = shape
    old = np.load(old_path, mmap_mode="r")
    if old.shape != (lanes, cap, c, h, w) or old.dtype != np.dtype(dtype):
        raise ValueError(
            f"{old_path} holds {old.dtype} {old.shape}; the run expects {np.dtype(dtype)} {(lanes, cap, c, h, w)}"
        )
    with replacing(new_path) as tmp:
        new = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        for lane in range(lanes):
            for start in range(0, cap, 4096):
                new[lane, start : start + 4096] = old[lane, start : start + 4096].transpose(0, 2, 3, 1)
        new.flush()
        del new, old
    old_path.unlink()


def _open(directory: Path | None, name: str, shape: tuple[int, ...], dtype: Any, resume: bool) -> np.ndarray:
    if directory is None:
        return np.zeros(shape, dtype=dtype)
    path = directory / f"{name}.npy"
    if resume:
        array = np.load(path, mmap_mode="r+")
        if array.shape != shape or array.dtype != np.dtype(dtype):
            raise ValueError(f"{path} holds {array.dtype} {array.shape}; the run expects {np.dtype(dtype)} {shape}")
        return array
    directory.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
