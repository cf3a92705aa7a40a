"""Sample frames of the task presets, to look at what a policy will see."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from agent_runtime.spec import PolicySpec
from train.envs import build_spec, make_env
from train.presets import get_preset


def save_sample_frame(preset_name: str, path: Path, steps: int = 25, seed: int = 0, zoom: int = 4) -> Path:
    """Run ``steps`` random actions and save the newest camera frame as a PNG.

    The frame is enlarged ``zoom`` times by pixel repetition (no smoothing), so what is saved is
    exactly what the policy sees, only easier to look at.
    """
    preset = get_preset(preset_name)
    env = make_env(preset, "pixels")
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    return save_png(obs["pixels"][..., -3:], path, zoom)


@dataclass(frozen=True)
class PresetCheck:
    """What ``check_preset`` found; ``problems`` is empty when the preset is sound.

    Attributes:
        frame: the sample frame's PNG.
        steps: random steps taken.
        episodes: episodes begun (resets).
        reward_range: the smallest and largest step reward seen.
        problems: one line per problem found (shape, dtype, NaN, a black or frozen camera).
    """

    frame: Path
    steps: int
    episodes: int
    reward_range: tuple[float, float]
    problems: tuple[str, ...]


def check_preset(preset_name: str, frame_path: Path, steps: int = 300, seed: int = 0) -> PresetCheck:
    """Build a preset's pixel env, save a sample frame, and step random actions checking every observation.

    Each observation must have exactly the spec's entries, shapes and dtypes and no NaN or infinity;
    every reward must be finite; the camera frames must not be black and must change over the steps.
    """
    preset = get_preset(preset_name)
    spec = build_spec(preset, "pixels")
    env = make_env(preset, "pixels")
    problems: list[str] = []
    rewards: list[float] = []
    episodes = 1
    try:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        first = obs["pixels"][..., -3:].copy()
        changed = False
        for step in range(steps + 1):
            problems += _observation_problems(obs, spec, step)
            if step < steps and not problems:
                obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                rewards.append(float(reward))
                changed = changed or not np.array_equal(obs["pixels"][..., -3:], first)
                if terminated or truncated:
                    obs, _ = env.reset()
                    episodes += 1
        frame = obs["pixels"][..., -3:]
    finally:
        env.close()
    if not np.isfinite(rewards).all():
        problems.append("a reward was NaN or infinite")
    if int(frame.max()) == 0:
        problems.append("the camera frame is black: is [camera] pointed at the model?")
    elif not changed:
        problems.append(f"the camera frame did not change over {steps} random steps: is [camera] looking at the robot?")
    save_png(frame, frame_path)
    low, high = (min(rewards), max(rewards)) if rewards else (0.0, 0.0)
    return PresetCheck(frame_path, len(rewards), episodes, (low, high), tuple(problems))


def _observation_problems(obs: dict[str, np.ndarray], spec: PolicySpec, step: int) -> list[str]:
    if set(obs) != set(spec.observation_names):
        return [f"step {step}: observation entries {sorted(obs)}, the spec has {sorted(spec.observation_names)}"]
    problems = []
    for entry in spec.observations:
        value = obs[entry.name]
        if value.shape != entry.shape or value.dtype != np.dtype(entry.dtype):
            problems.append(
                f"step {step}: {entry.name} is {value.dtype} {value.shape}, the spec says {entry.dtype} {entry.shape}"
            )
        elif value.dtype.kind == "f" and not np.isfinite(value).all():
            problems.append(f"step {step}: {entry.name} holds NaN or infinity")
    return problems


def save_png(frame: np.ndarray, path: Path, zoom: int = 4) -> Path:
    """Save an RGB frame as a PNG, enlarged ``zoom`` times by pixel repetition (exactly what a policy sees)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.repeat(np.repeat(frame, zoom, axis=0), zoom, axis=1))
    return path
