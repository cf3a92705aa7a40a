"""Environment steps per second of every preset: physics alone, step+render fast, step+render default.

The step+render rate of a preset is the ceiling of pixel training on it. Side by side in one run:
``state`` (no camera), ``pixels`` with the preset's render quality, and ``pixels`` with MuJoCo's
default quality (multisampling, shadows, reflections), to show what the render settings buy.
Every pixel run checks that its frames are lit and change over time (shared/FACTS.md: a broken
GL context returns black frames very fast, which looks like a speed-up).

For DeepMind Control presets a last pair of columns times dm_control's own renderer
(``physics.render`` at its own quality, camera 0, as DrQ-v2 renders) against ours.

Usage: python -m bench.env_rate [--seconds 3] [--presets NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import numpy as np

from train.envs import make_env
from train.presets import PRESETS, TaskPreset


def steps_per_second(preset: TaskPreset, mode: str, seconds: float) -> float:
    env = make_env(preset, mode)  # type: ignore[arg-type]
    try:
        obs, _ = env.reset(seed=0)
        env.action_space.seed(0)
        first = obs
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                obs, _ = env.reset()
        rate = steps / (time.perf_counter() - start)
    finally:
        env.close()
    if mode == "pixels":
        frame = obs["pixels"][..., -3:]
        lit = float((frame.max(axis=-1) > 30).mean())
        if lit < 0.02 or np.array_equal(frame, first["pixels"][..., -3:]):
            raise RuntimeError(f"{preset.name}: frames are black or frozen (lit fraction {lit:.3f})")
    return rate


def own_render_rate(preset: TaskPreset, seconds: float) -> float | None:
    """Steps/s of step + dm_control's own ``physics.render`` (its quality, camera 0) for a DMC preset;
    ``None`` for other presets. The peer of our fast renderer on the same task."""
    if not preset.env_id.startswith("dm_control/"):
        return None
    env = make_env(preset, "state")
    try:
        physics = env.unwrapped.physics  # type: ignore[attr-defined]
        env.reset(seed=0)
        env.action_space.seed(0)
        first = physics.render(preset.image_size, preset.image_size, camera_id=0)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            frame = physics.render(preset.image_size, preset.image_size, camera_id=0)
            steps += 1
            if terminated or truncated:
                env.reset()
        rate = steps / (time.perf_counter() - start)
    finally:
        env.close()
    if frame.max() == 0 or np.array_equal(frame, first):
        raise RuntimeError(f"{preset.name}: dm_control's frames are black or frozen")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per cell")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = parser.parse_args()
    print(f"machine: {platform.machine()}; policy steps/s (one step = action_repeat simulator steps)")
    print("| preset | state (physics) | pixels, fast (ours) | pixels, MuJoCo default | fast / default "
          "| dm_control's own render | fast / dm_control's |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.presets:
        preset = PRESETS[name]
        state = steps_per_second(preset, "state", args.seconds)
        fast = steps_per_second(preset, "pixels", args.seconds)
        default = steps_per_second(dataclasses.replace(preset, render_quality="default"), "pixels", args.seconds)
        own = own_render_rate(preset, args.seconds)
        theirs = f"{own:,.0f} | {fast / own:.1f}x" if own else "- | -"
        print(f"| {preset.name} | {state:,.0f} | {fast:,.0f} | {default:,.0f} | {fast / default:.1f}x | {theirs} |")


if __name__ == "__main__":
    main()
