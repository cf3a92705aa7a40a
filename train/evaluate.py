"""Evaluation of a policy on held-out seeds, optionally capped by a time budget, with videos of chosen episodes.

Shared by training (the teacher), distillation (teacher and students) and ``agent-runtime evaluate``
(any exported policy), so every return in a report is measured the same way: episode ``i`` resets
with its own seed, so any episode can be replayed alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import imageio.v3 as iio
import numpy as np

from agent_runtime.files import replacing
from train.envs import make_env, preset_handles
from train.presets import ObsMode, TaskPreset
from train.render import FrameRenderer

log = logging.getLogger(__name__)

PROGRESS_LOG_S = 30.0
"""Seconds between progress lines of a long evaluation."""

EVAL_SEED_BASE = 1_000_000_000
"""Evaluation seeds start here, far above every other seed a run draws (training ``seed + step``,
distillation's collection from 10,000, the demo robot's from 2,000,000), so evaluation episodes are held out."""


class EpisodePolicy(Protocol):
    """A policy acting in one environment, episode by episode."""

    def reset(self) -> None:
        """A new episode begins (clear any history)."""
        ...

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The action (within the action bounds) for one observation."""
        ...


@dataclass(frozen=True)
class EvalResult:
    """The evaluation episodes, in the order run (one per seed).

    Attributes:
        seeds: the reset seed of each episode: ``env.reset(seed=s)`` replays it exactly.
        returns: sum of rewards.
        lengths: policy steps.
        terminated: whether the environment ended the episode before its time limit.
        seconds: wall time of all episodes.
        requested: episodes asked for; more than ``len(seeds)`` when a time budget stopped the run.
    """

    seeds: tuple[int, ...]
    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    terminated: tuple[bool, ...]
    seconds: float
    requested: int

    @property
    def mean(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Standard deviation of the episode returns."""
        return float(np.std(self.returns))


EVAL_SEEDS_PER_RUN = 1_000_000
"""Held-out seeds of one run seed: ``EVAL_SEED_BASE + seed * EVAL_SEEDS_PER_RUN + i``, so runs of
different seeds never share an evaluation episode, however many episodes they run."""


def eval_seeds(seed: int, episodes: int) -> list[int]:
    """The held-out seeds of a run's evaluation episodes (the same for every policy of that seed)."""
    if not 0 <= episodes <= EVAL_SEEDS_PER_RUN:
        raise ValueError(f"episodes is {episodes}; evaluate between 0 and {EVAL_SEEDS_PER_RUN:,} episodes")
    if seed < 0:
        raise ValueError(f"seed is {seed}; evaluation seeds derive from a non-negative run seed")
    return [EVAL_SEED_BASE + EVAL_SEEDS_PER_RUN * seed + i for i in range(episodes)]


def evaluate(
    policy: EpisodePolicy,
    preset: TaskPreset,
    mode: ObsMode,
    seeds: Sequence[int],
    video_path: Path | None = None,
    video_size: int = 256,
    budget_s: float | None = None,
    videos: Mapping[int, Path] | None = None,
    stop: Callable[[], bool] | None = None,
) -> EvalResult:
    """Run one episode per seed with ``policy``, in order, and return what happened.

    Args:
        policy: acts from the environment's observations (deterministic, for a report that repeats).
        preset: the task.
        mode: its observation mode.
        seeds: one reset seed per episode.
        video_path: also write the first episode as an mp4, rendered from the preset's camera.
        video_size: side of the video frames in pixels.
        budget_s: start no new episode once this many seconds have passed (the first always runs);
            the result says how many ran.
        videos: seed -> mp4 path, to record those episodes (e.g. the worst ones, replayed).
        stop: polled before each episode; when it returns true no further episode starts (Ctrl-C).
    """
    wanted: dict[int, Path] = dict(videos or {})
    if video_path is not None and seeds:
        wanted.setdefault(seeds[0], video_path)
    env = make_env(preset, mode)
    recorder: FrameRenderer | None = None
    ran: list[int] = []
    returns: list[float] = []
    lengths: list[int] = []
    terminations: list[bool] = []
    began = time.perf_counter()
    next_log = began + PROGRESS_LOG_S
    try:
        # gymnasium's MuJoCo envs and dm_control's tasks keep their model and data in different places.
        model, data = preset_handles(env, preset)
        if wanted:
            recorder = FrameRenderer(model, video_size, preset.camera, preset.render_quality)
        fps = max(1, round(1.0 / (env.unwrapped.dt * preset.action_repeat)))  # type: ignore[attr-defined]
        for seed in seeds:
            if budget_s is not None and ran and time.perf_counter() - began >= budget_s:
                break
            if stop is not None and stop():
                break
            video: list[np.ndarray] | None = [] if seed in wanted else None
            obs, _ = env.reset(seed=seed)
            policy.reset()
            total, length, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                if video is not None and recorder is not None:
                    video.append(recorder.render(data))
                obs, reward, terminated, truncated, _ = env.step(policy(obs))
                total += float(reward)
                length += 1
            ran.append(int(seed))
            returns.append(total)
            lengths.append(length)
            terminations.append(bool(terminated))
            if video:
                write_video(wanted[seed], video, fps)
            if time.perf_counter() >= next_log:
                next_log += PROGRESS_LOG_S
                log.info("evaluation: %d of %d episodes in %.0f s", len(ran), len(seeds), time.perf_counter() - began)
    finally:
        if recorder is not None:
            recorder.close()
        env.close()
    return EvalResult(
        tuple(ran), tuple(returns), tuple(lengths), tuple(terminations), time.perf_counter() - began, len(seeds)
    )


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Write uint8 RGB frames as an H.264 mp4 (written to a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, suffix=".mp4") as tmp:
        iio.imwrite(tmp, np.stack(frames), fps=fps, codec="libx264", macro_block_size=1)
