"""Pixel training throughput against its ceiling and against Stable-Baselines3 SAC on state.

Side by side in one run, on one preset:
1. ceiling: the bare environment's step+render rate (pixels, no learning);
2. ours: environment steps per second of pixel training with the default frozen encoder
   (tf_efficientnet_lite0, stage-2 feature map, conv neck), one update per step, batch 256,
   measured after learning starts;
3. peer: Stable-Baselines3 SAC with default settings (batch 256, one update per step) on the same
   task's state observations, measured after learning starts.
Target (issue 3): ours >= 1.5x the peer.

Usage: python bench/train_throughput.py [--preset inverted_pendulum] [--steps 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import torch

from bench.env_rate import steps_per_second
from train.config import TrainConfig
from train.presets import get_preset
from train.runner import run

WARMUP = 1000


def ours(preset: str, steps: int, representation: str, encoder_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            preset=preset,
            representation=representation,  # type: ignore[arg-type]
            encoder=dataclasses.replace(TrainConfig().encoder, input_size=encoder_size),
            steps=WARMUP + steps,
            learning_starts=WARMUP,
            batch_size=256,
            eval_every=10**9,
            eval_episodes=1,
            checkpoint_every=10**9,
            video=False,
            run_dir=Path(tmp) / "run",
        )
        summary = run(cfg)
    return float(summary["learning_steps_per_s"])


def stable_baselines3(preset: str, steps: int) -> float:
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Clock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None

        def _on_step(self) -> bool:
            if self.num_timesteps == WARMUP:
                self.start = time.perf_counter()
            return True

    torch.set_num_threads(2)
    env = gym.make(get_preset(preset).env_id)
    model = SAC("MlpPolicy", env, batch_size=256, learning_starts=WARMUP, seed=0, device="cpu", verbose=0)
    clock = Clock()
    model.learn(total_timesteps=WARMUP + steps, callback=clock)
    assert clock.start is not None
    rate = steps / (time.perf_counter() - clock.start)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="inverted_pendulum")
    parser.add_argument("--steps", type=int, default=2000, help="learning steps measured (after 1000 random)")
    parser.add_argument("--encoder-size", type=int, default=84, help="frozen encoder input size")
    args = parser.parse_args()
    preset = get_preset(args.preset)
    results = {
        "ceiling (env step+render)": steps_per_second(preset, "pixels", 5.0),
        "ours, frozen pixels": ours(args.preset, args.steps, "frozen", args.encoder_size),
        "ours, state": ours(args.preset, args.steps, "state", args.encoder_size),
        "SB3 SAC, state": stable_baselines3(args.preset, args.steps),
    }
    peer = results["SB3 SAC, state"]
    ceiling = results["ceiling (env step+render)"]
    print(f"preset {args.preset}, {args.steps} learning steps after {WARMUP} random, batch 256, 1 update/step")
    print("| run | env steps/s | vs SB3 state | of ceiling |")
    print("|---|---:|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.1f} | {rate / peer:.2f}x | {rate / ceiling:.1%} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
