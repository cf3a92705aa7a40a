"""Pixel training throughput: ours against its collection ceiling and against Stable-Baselines3 SAC on the same pixels.

Side by side in one run, on one preset, every row after 1,000 random steps, batch 256, one update
per environment step unless the row says otherwise (each row in a fresh process, so that one row's
allocator or thread settings never carry into the next):
1. ceiling: collection alone, no learning: environment step, render and frozen encoding (the
   default ``tf_efficientnet_lite0`` stage-2 map in onnxruntime), through the training collector;
2. ours as it was before issue 14's levers: feature maps stored channels-first and transposed by
   the shift kernel, and glibc's allocator defaults (the figure the issue was written against);
3. ours, the default (frozen pixels, conv neck, feature shift 1);
4. ours with ``--collect-ahead`` (the next step collected while the update runs);
5. ours with the DrQ-v2 schedule (``--updates-per-step 0.5``: one update every second step);
6. Stable-Baselines3 SAC, ``MultiInputPolicy`` (its NatureCNN on the stacked 84x84x9 frames, plus
   the proprio), batch 256, one update per step, on the same environment: the peer a user would
   pick instead;
7. ours and Stable-Baselines3 SAC on the state vector (issue 3's comparison).
Our rows are environment steps per second while learning (``learning_steps_per_s``: evaluation
excluded). Targets (issue 14): the default at >= 2x the 14 steps/s of before, hence >= 30x the SB3
pixel peer.

Usage: python -m bench.train_throughput [--preset inverted_pendulum] [--steps 2000] [--peer-steps 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.rows import print_row_result, run_row

WARMUP = 1000
ROWS = {
    "ceiling": "ceiling: collection alone (step + render + frozen encoding)",
    "before": "ours before issue 14 (maps channels-first, glibc allocator defaults)",
    "default": "ours, frozen pixels (default)",
    "ahead": "ours, --collect-ahead",
    "drqv2": "ours, DrQ-v2 schedule (--updates-per-step 0.5)",
    "sb3-pixels": "SB3 SAC, MultiInputPolicy on the same pixels",
    "state": "ours, state",
    "sb3-state": "SB3 SAC, state",
}


def _config(preset: str, steps: int, **changes: Any) -> Any:
    from train.config import TrainConfig

    cfg = TrainConfig(preset=preset, steps=WARMUP + steps, learning_starts=WARMUP, batch_size=256, eval_every=10**9,
                      eval_episodes=1, checkpoint_every=10**9, video=False)  # fmt: skip
    return dataclasses.replace(cfg, **changes)


def _ours(cfg: Any) -> float:
    from train.runner import run

    with tempfile.TemporaryDirectory() as tmp:
        summary = run(dataclasses.replace(cfg, run_dir=Path(tmp) / "run"))
    return float(summary["learning_steps_per_s"])


def _before(cfg: Any) -> float:
    """Ours with issue 14's two learner levers undone: channels-first maps and glibc's allocator defaults."""
    from bench.learner_step import _shift_before
    from train import learner, replay, runner, sac

    runner.keep_freed_memory = lambda: False
    sac.random_shift_features = _shift_before
    layout = replay.ReplayLayout

    def channels_first(*args: Any, **kwargs: Any) -> Any:
        return layout(*args, **{**kwargs, "maps": False})

    learner.ReplayLayout = channels_first  # type: ignore[assignment, misc]
    return _ours(cfg)


def _ceiling(preset: str, steps: int) -> float:
    import torch

    from train.collector import LocalCollector
    from train.encoding import encode_function
    from train.envs import build_spec
    from train.presets import get_preset
    from train.teacher import build_encoder

    cfg = _config(preset, steps)
    torch.set_num_threads(cfg.threads)
    spec = build_spec(get_preset(preset), "pixels")
    encoder = build_encoder(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(cfg, run_dir=Path(tmp))
        collector = LocalCollector(
            cfg, spec, encoder, encode_function(cfg, encoder, spec, torch.device("cpu"), cfg.run_dir), 0
        )
        try:
            collector.start(seed=0)
            collector.collect(100, random_actions=True)
            began = time.perf_counter()
            got = collector.collect(steps, random_actions=True)
            rate = steps / (time.perf_counter() - began)
        finally:
            collector.close()
    features = got.next_frames.astype("float32")
    if not (features.std(axis=0) > 0).any():
        raise RuntimeError("the encoded frames never changed: the renderer is broken (shared/FACTS.md)")
    return rate


def _stable_baselines3(preset: str, steps: int, pixels: bool) -> float:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from train.envs import make_env
    from train.presets import get_preset

    class Clock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None

        def _on_step(self) -> bool:
            if self.num_timesteps == WARMUP:
                self.start = time.perf_counter()
            return True

    torch.set_num_threads(2)
    env = make_env(preset, "pixels") if pixels else gym.make(get_preset(preset).env_id)
    policy = "MultiInputPolicy" if pixels else "MlpPolicy"
    model = SAC(policy, env, batch_size=256, learning_starts=WARMUP, buffer_size=WARMUP + steps + 10, seed=0,
                device="cpu", verbose=0)  # fmt: skip
    clock = Clock()
    model.learn(total_timesteps=WARMUP + steps, callback=clock)
    assert clock.start is not None
    rate = steps / (time.perf_counter() - clock.start)
    env.close()
    return rate


def _row(name: str, preset: str, steps: int, peer_steps: int) -> float:
    if name == "ceiling":
        return _ceiling(preset, steps)
    if name == "before":
        return _before(_config(preset, steps))
    if name == "default":
        return _ours(_config(preset, steps))
    if name == "ahead":
        return _ours(_config(preset, steps, collect_ahead=True))
    if name == "drqv2":
        return _ours(_config(preset, steps, updates_per_step=0.5))
    if name == "state":
        return _ours(_config(preset, steps, representation="state"))
    if name == "sb3-pixels":
        return _stable_baselines3(preset, peer_steps, pixels=True)
    return _stable_baselines3(preset, steps, pixels=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="inverted_pendulum")
    parser.add_argument("--steps", type=int, default=2000, help="learning steps measured per row (after 1000 random)")
    parser.add_argument("--peer-steps", type=int, default=60, help="learning steps of the SB3 pixel peer (~1 step/s)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="which rows to run")
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # one row, in this process
    args = parser.parse_args()
    if args.row:
        print_row_result(_row(args.row, args.preset, args.steps, args.peer_steps))
        return
    from bench.machine import describe

    results: dict[str, float] = {}
    for name in args.rows:
        row_args = ["--preset", args.preset, "--steps", str(args.steps), "--peer-steps", str(args.peer_steps)]
        results[name] = run_row("bench.train_throughput", name, row_args)
        print(f"{ROWS[name]}: {results[name]:,.2f} env steps/s", flush=True)
    print(f"\nmachine: {describe()}")
    print(f"preset {args.preset}, {args.steps} learning steps after {WARMUP} random (SB3 pixels: {args.peer_steps}), "
          "batch 256, 1 update per step unless the row says otherwise")  # fmt: skip
    print("| run | env steps/s | vs before | vs SB3 pixels | of ceiling |")
    print("|---|---:|---:|---:|---:|")
    for name, rate in results.items():
        ratios = [
            rate / results[ref] if ref in results else float("nan") for ref in ("before", "sb3-pixels", "ceiling")
        ]
        print(f"| {ROWS[name]} | {rate:,.2f} | {ratios[0]:.2f}x | {ratios[1]:.1f}x | {ratios[2]:.1%} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
