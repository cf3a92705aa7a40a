"""Evaluation of a policy on held-out seeds, with an optional video of the first episode.

Shared by training (the teacher) and distillation (teacher and student), so every return in a
report is measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import imageio.v3 as iio
import numpy as np

from train.envs import make_env
from train.presets import ObsMode, TaskPreset
from train.render import FrameRenderer

EVAL_SEED_BASE = 1_000_000
"""Evaluation seeds start here, far from any training seed, so evaluation episodes are held out."""


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
    """Returns of the evaluation episodes, in seed order."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def mean(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Standard deviation of the episode returns."""
        return float(np.std(self.returns))


def eval_seeds(seed: int, episodes: int) -> list[int]:
    """The held-out seeds of a run's evaluation episodes."""
    return [EVAL_SEED_BASE + 1000 * seed + i for i in range(episodes)]


def evaluate(
    policy: EpisodePolicy,
    preset: TaskPreset,
    mode: ObsMode,
    seeds: list[int],
    video_path: Path | None = None,
    video_size: int = 256,
) -> EvalResult:
    """Run one episode per seed with ``policy`` and return the episode returns.

    With ``video_path``, the first episode is also written as an mp4, rendered from the preset's
    camera at ``video_size`` pixels.
    """
    env = make_env(preset, mode)
    recorder: FrameRenderer | None = None
    video: list[np.ndarray] = []
    returns, lengths = [], []
    try:
        inner = env.unwrapped
        if video_path is not None:
            recorder = FrameRenderer(inner.model, video_size, preset.camera, preset.render_quality)  # type: ignore[attr-defined]
        for episode, seed in enumerate(seeds):
            obs, _ = env.reset(seed=seed)
            policy.reset()
            total, length, done = 0.0, 0, False
            while not done:
                if recorder is not None and episode == 0:
                    video.append(recorder.render(inner.data))  # type: ignore[attr-defined]
                obs, reward, terminated, truncated, _ = env.step(policy(obs))
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
    finally:
        if recorder is not None:
            recorder.close()
        env.close()
    if video_path is not None and video:
        fps = max(1, round(1.0 / (inner.dt * preset.action_repeat)))  # type: ignore[attr-defined]
        write_video(video_path, video, fps)
    return EvalResult(tuple(returns), tuple(lengths))


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Write uint8 RGB frames as an H.264 mp4 (written to a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    iio.imwrite(tmp, np.stack(frames), fps=fps, codec="libx264", macro_block_size=1)
    tmp.replace(path)
