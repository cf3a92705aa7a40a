"""The price and the gain of Ray here: remote collectors against in-process training, collection alone, a sweep.

Side by side in one run, each row in a fresh process (a local Ray instance with this machine's CPUs
where the row uses Ray):
1. training, frozen pixels (the default trainer), env steps/s while learning (``learning_steps_per_s``,
   after ``--warmup`` random steps): in-process (``--threads`` torch threads), then with 1 and with 2
   remote collectors (``--collectors``: each collector a process with one thread, the learner
   ``--learner-threads`` in the driver; the machine's cores are the same for every row);
2. collection alone (random actions, no learner), env steps/s: the in-process collector, then 1 and
   2 remote collectors driven in rounds, as training drives them;
3. a sweep of ``--trials`` state-SAC runs on Ray Tune (one CPU each, as many at once as the cores
   allow) against the same runs one after another in this process, wall time.
Target (issue 17): remote collection costs at most 15% against in-process at equal cores (row 1, the
ratio of 1 remote collector to in-process >= 0.85).

Usage: python -m bench.ray_scaling [--preset inverted_pendulum] [--steps 1500]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.rows import print_row_result, run_row

ROWS = {
    "train-local": "training, in-process collection",
    "train-remote-1": "training, 1 remote collector",
    "train-remote-2": "training, 2 remote collectors",
    "collect-local": "collection alone, in-process",
    "collect-remote-1": "collection alone, 1 remote collector",
    "collect-remote-2": "collection alone, 2 remote collectors",
    "sweep-sequential": "sweep trials one after another (wall s)",
    "sweep-tune": "the same trials as a sweep on Ray Tune (wall s)",
}


def _config(args: argparse.Namespace, **changes: Any) -> Any:
    from train.config import TrainConfig

    cfg = TrainConfig(preset=args.preset, steps=args.warmup + args.steps, learning_starts=args.warmup,
                      eval_every=10**9, eval_episodes=1, final_eval_episodes=1, checkpoint_every=10**9,
                      video=False, threads=args.threads)  # fmt: skip
    return dataclasses.replace(cfg, **changes)


def _train(cfg: Any) -> float:
    from train.runner import run

    with tempfile.TemporaryDirectory() as tmp:
        summary = run(dataclasses.replace(cfg, run_dir=Path(tmp) / "run"))
    return float(summary["learning_steps_per_s"])


def _collect(args: argparse.Namespace, collectors: int) -> float:
    import torch

    from train.collector import LocalCollector
    from train.encoding import encode_function
    from train.envs import build_spec
    from train.presets import get_preset
    from train.ray_collectors import RayCollectors
    from train.teacher import build_encoder

    cfg = _config(args, threads=1, collectors=collectors)
    torch.set_num_threads(1)
    spec = build_spec(get_preset(cfg.preset), "pixels")
    encoder = build_encoder(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        if collectors == 0:
            encode = encode_function(cfg, encoder, spec, torch.device("cpu"), Path(tmp))
            collector: Any = LocalCollector(cfg, spec, encoder, encode, seed=0)
        else:
            collector = RayCollectors(cfg, spec, encoder, seed=0)
        try:
            collector.start(seed=0)
            per_call = max(1, cfg.round_steps)
            first = collector.collect(per_call, random_actions=True).next_frames  # warm
            calls = max(1, args.steps // (per_call * cfg.lanes))
            began = time.perf_counter()
            for _ in range(calls):
                last = collector.collect(per_call, random_actions=True).next_frames
            rate = calls * per_call * cfg.lanes / (time.perf_counter() - began)
        finally:
            collector.close()
    if np.array_equal(first[0], last[-1]):
        raise RuntimeError("the encoded frames never changed: the renderer is broken (shared/FACTS.md)")
    return rate


def _sweep(args: argparse.Namespace, tune: bool) -> float:
    from train.runner import run
    from train.sweep import train_all

    with tempfile.TemporaryDirectory() as tmp:
        steps = args.warmup + args.sweep_steps
        configs = [
            _config(args, representation="state", threads=1, seed=seed, steps=steps, run_dir=Path(tmp) / f"s{seed}")
            for seed in range(args.trials)
        ]
        began = time.perf_counter()
        if tune:
            train_all(configs, cpus_per_trial=1.0)
        else:
            for cfg in configs:
                run(cfg)
        return time.perf_counter() - began


def _row(name: str, args: argparse.Namespace) -> float:
    if name == "train-local":
        return _train(_config(args))
    if name.startswith("train-remote-"):
        return _train(_config(args, collectors=int(name[-1]), threads=args.learner_threads))
    if name == "collect-local":
        return _collect(args, 0)
    if name.startswith("collect-remote-"):
        return _collect(args, int(name[-1]))
    return _sweep(args, tune=name == "sweep-tune")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="inverted_pendulum")
    parser.add_argument("--steps", type=int, default=1500, help="steps measured per row (after --warmup random ones)")
    parser.add_argument("--warmup", type=int, default=500, help="random steps before learning")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of in-process training")
    parser.add_argument(
        "--learner-threads", type=int, default=2, help="torch threads of the learner beside remote collectors"
    )
    parser.add_argument("--trials", type=int, default=2, help="trials of the sweep rows")
    parser.add_argument("--sweep-steps", type=int, default=3000, help="learning steps of each sweep trial (state)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="which rows to run")
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # one row, in this process
    args = parser.parse_args()
    if args.row:
        print_row_result(_row(args.row, args))
        return
    from bench.machine import describe

    forwarded = ["--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads",
                 str(args.threads), "--learner-threads", str(args.learner_threads), "--trials", str(args.trials),
                 "--sweep-steps", str(args.sweep_steps)]  # fmt: skip
    results: dict[str, float] = {}
    for name in args.rows:
        results[name] = run_row("bench.ray_scaling", name, forwarded)
        print(f"{ROWS[name]}: {results[name]:,.2f}", flush=True)
    print(f"\nmachine: {describe()}; {os.cpu_count()} CPUs for Ray")
    print(f"preset {args.preset}, frozen pixels, {args.steps} steps measured after {args.warmup} random")
    print("| row | env steps/s (sweep: wall s) | against in-process |")
    print("|---|---:|---:|")
    for name, value in results.items():
        base = {"train": "train-local", "collect": "collect-local", "sweep": "sweep-sequential"}[name.split("-")[0]]
        ratio = value / results[base] if base in results else float("nan")
        print(f"| {ROWS[name]} | {value:,.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
