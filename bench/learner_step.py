"""The learner's step (replay sample + SAC update, batch 256, frozen maps with the feature shift), profiled.

Side by side in one run, on a replay of random stage-2 maps (40x11x11, float16; the cost does not
depend on the values), each lever of issue 14 alone and together:
- the replay's layout of feature maps: channels-first ``(C, h, w)`` per frame, sampled and then
  transposed by the shift kernel as before, against stored by cell ``(h, w, C)``, sampled straight
  into the channels-last layout the shift and the conv neck read;
- the C allocator: glibc's defaults (large blocks are fresh ``mmap`` pages on every update) against
  ``train.allocator.keep_freed_memory``. glibc cannot be put back, so the default rows run first.
Then a breakdown of the final configuration's update by operator class (torch.profiler).

Usage: python -m bench.learner_step [--threads 2] [--steps 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

import numpy as np
import torch

from bench.machine import describe
from models import scratch_encoder
from train import sac as sac_module
from train.allocator import keep_freed_memory
from train.config import TrainConfig
from train.envs import build_spec
from train.presets import get_preset
from train.replay import Replay, ReplayLayout
from train.sac import SAC
from train.teacher import build_encoder, build_learner, frame_shape, proprio_dim

BATCH = 256
STEPS_STORED = 8000


def _shift_before(features: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The feature shift before issue 14: transposed to cells and back, as contiguous float16 copies."""
    b, k, c, h, w = features.shape
    cells = scratch_encoder.shift_indices(b, h, w, pad, generator).to(features.device)
    rows = (torch.arange(b, device=features.device).view(b, 1) * (h * w) + cells).view(-1)
    by_cell = features.reshape(b, k * c, h * w).transpose(1, 2).reshape(b * h * w, k * c)
    return by_cell.index_select(0, rows).view(b, h * w, k * c).transpose(1, 2).reshape(b, k, c, h, w)


def _setup(maps: bool) -> tuple[SAC, Replay, np.random.Generator]:
    cfg = TrainConfig()
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights="none"))
    spec = build_spec(get_preset(cfg.preset), cfg.observation_mode)
    encoder = build_encoder(cfg)
    torch.manual_seed(0)
    agent = build_learner(cfg, spec, encoder)
    shape = frame_shape(cfg, spec, encoder)
    layout = ReplayLayout(1, 2 * STEPS_STORED + 2, shape, "float16", proprio_dim(cfg, spec), spec.action.dim, 3, maps)
    replay = Replay(layout, cfg.n_step, cfg.sac.gamma)
    rng = np.random.default_rng(0)
    p = proprio_dim(cfg, spec)
    replay.start_episodes(np.array([0]), rng.standard_normal((1, *shape)).astype(np.float16), np.zeros((1, p)))
    for i in range(STEPS_STORED):
        frame = rng.standard_normal((1, *shape)).astype(np.float16)
        done = np.array([i % 1000 == 999])
        replay.add_steps(np.zeros((1, spec.action.dim), np.float32), np.ones(1), done, frame, np.zeros((1, p)))
        if done[0]:
            replay.start_episodes(np.array([0]), frame, np.zeros((1, p)))
    return agent, replay, rng


def _measure(maps: bool, steps: int) -> tuple[float, float]:
    """Median ms of a replay sample, and of a whole learner step (sample + update)."""
    agent, replay, rng = _setup(maps)
    kept = sac_module.random_shift_features
    if not maps:
        sac_module.random_shift_features = _shift_before
    try:
        for _ in range(3):
            agent.update(replay.sample(BATCH, rng))  # warm-up: oneDNN picks and caches its kernels
        sample, step = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            batch = replay.sample(BATCH, rng)
            t1 = time.perf_counter()
            agent.update(batch)
            t2 = time.perf_counter()
            sample.append(t1 - t0)
            step.append(t2 - t0)
    finally:
        sac_module.random_shift_features = kept
    return 1e3 * float(np.median(sample)), 1e3 * float(np.median(step))


CLASSES = (
    ("convolution, forward and backward", ("convolution", "mkldnn_conv")),
    ("linear layers (addmm, mm)", ("addmm", "aten::mm", "aten::bmm")),
    ("copies and dtype conversions", ("copy_", "_to_copy", "aten::to", "contiguous", "clone")),
    ("feature shift gather (index_select)", ("index_select", "gather")),
    ("optimizer (Adam step, zero_grad)", ("Optimizer",)),
    ("activations and their backward", ("relu", "threshold", "clamp", "tanh", "layer_norm", "softplus")),
)


def _breakdown(steps: int) -> list[tuple[str, float]]:
    agent, replay, rng = _setup(True)
    batches = [replay.sample(BATCH, rng) for _ in range(steps)]
    agent.update(batches[0])
    with torch.profiler.profile() as prof:
        for batch in batches:
            agent.update(batch)
    per_class: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key
        label = next((label for label, keys in CLASSES if any(k in name for k in keys)), "other")
        per_class[label] += event.self_cpu_time_total / 1e3 / steps
    return sorted(per_class.items(), key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed learner steps per row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for allocator in ("glibc defaults", "freed memory kept"):
        if allocator == "freed memory kept" and not keep_freed_memory():
            print("this C library takes no mallopt settings: the kept rows are skipped")
            break
        for maps in (False, True):
            layout = "by cell (h, w, C)" if maps else "channels-first (C, h, w), as before"
            sample_ms, step_ms = _measure(maps, args.steps)
            rows.append((layout, allocator, sample_ms, step_ms))
            print(f"{layout}, {allocator}: sample {sample_ms:.1f} ms, step {step_ms:.1f} ms", flush=True)
    before = rows[0][3]
    print(f"\nmachine: {describe()}; {args.threads} threads, batch {BATCH}")
    print("| replay layout of the maps | allocator | sample ms | sample + update ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    for layout, allocator, sample_ms, step_ms in rows:
        print(f"| {layout} | {allocator} | {sample_ms:.1f} | {step_ms:.1f} | {before / step_ms:.2f}x |")
    print("\n| the update (both levers), by operator class | ms per update |\n|---|---:|")
    for label, ms in _breakdown(max(10, args.steps // 2)):
        print(f"| {label} | {ms:.1f} |")


if __name__ == "__main__":
    main()
