"""Sample frames of the task presets, to look at what a policy will see."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from train.envs import make_env
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
    frame = obs["pixels"][..., -3:]
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.repeat(np.repeat(frame, zoom, axis=0), zoom, axis=1))
    return path
