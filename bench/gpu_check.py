"""The GPU check of issue 14, made to fit one short lease of a GPU machine (under 8 minutes).

1. One SAC update at batch 256, side by side on the CPU and the GPU, for the three pixel heads:
   frozen stage-2 maps with the conv neck (the default), DrQ-v2's from-scratch encoder, and the
   fine-tuned last stage (``--finetune-last-stage``). Batches are random (an update's cost does not
   depend on the values); GPU times wait for the device (``torch.cuda.synchronize``).
2. The from-scratch baseline on inverted_pendulum at issue 3's budget (batch 256, one update per
   step), on the GPU, for as many steps as fit in what is left of ``--minutes``: the run stops
   gracefully at the deadline with a checkpoint, so ``agent-runtime train --resume --run-dir RUN``
   continues it anywhere, a CPU included. Its evaluation curve is printed.

Without CUDA the GPU rows and the run are skipped, and the script says so.

Usage: python -m bench.gpu_check [--minutes 7.5] [--out runs/gpu_check] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.machine import describe
from bench.update_precision import _learner
from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.run_files import CHECKPOINT_NAME, EVALS_NAME

BATCH = 256
HEADS = {
    "frozen": "frozen stage-2 maps + conv neck (default)",
    "scratch": "from-scratch DrQ-v2 encoder",
    "finetune": "fine-tuned last stage (stage 2 on stage-1 maps)",
}


def _ms_per_update(head: str, device: torch.device, repeats: int) -> float:
    representation = "scratch" if head == "scratch" else "frozen"
    agent, batch = _learner(representation, "float32", 1, finetune=head == "finetune", device=device)
    if head != "scratch":  # feature maps as the replay gives them: (B, h, w, k, C) in memory
        maps = np.ascontiguousarray(batch.frames.transpose(0, 3, 4, 1, 2)).transpose(0, 3, 4, 1, 2)
        batch = batch._replace(frames=maps, next_frames=maps)
    agent.update(batch)  # warm-up: kernels chosen and cached
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        agent.update(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - began) / repeats * 1e3


def _scratch_baseline(out: Path, seconds: float, device: torch.device, threads: int) -> dict[str, Any]:
    """Issue 3's from-scratch baseline on the GPU until ``seconds`` have passed; its curve so far."""
    from train.runner import TrainingStopped, run

    cfg = TrainConfig(preset="inverted_pendulum", representation="scratch", steps=30_000, batch_size=256,
                      updates_per_step=1.0, eval_every=2_500, checkpoint_every=2_500, video=False,
                      device=str(device), threads=threads, run_dir=out / "scratch-inverted_pendulum")  # fmt: skip
    if (cfg.run_dir / CHECKPOINT_NAME).exists():
        cfg = dataclasses.replace(cfg, steps=None, resume=True)
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    began = time.perf_counter()
    try:
        summary = run(cfg, stop=stop)
        finished = True
    except TrainingStopped:
        finished = False
        summary = {}
    finally:
        timer.cancel()
    evals = json.loads((cfg.run_dir / EVALS_NAME).read_text())["evals"] if (cfg.run_dir / EVALS_NAME).exists() else []
    step = summary.get("steps") or load_checkpoint(cfg.run_dir / CHECKPOINT_NAME)["progress"]["step"]
    return {"finished": finished, "step": int(step), "seconds": round(time.perf_counter() - began, 1), "evals": evals,
            "run_dir": str(cfg.run_dir)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=7.5, help="the whole script's time budget")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="where the run and results go")
    parser.add_argument("--threads", type=int, default=max(1, min(8, torch.get_num_threads())), help="CPU threads")
    parser.add_argument("--cpu-repeats", type=int, default=3, help="timed CPU updates per head")
    parser.add_argument("--gpu-repeats", type=int, default=30, help="timed GPU updates per head")
    args = parser.parse_args()
    deadline = time.perf_counter() + 60 * args.minutes
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.device("cuda:0") if torch.cuda.is_available() else None
    print(f"machine: {describe()}; {args.threads} CPU threads", flush=True)
    if gpu is None:
        print("no CUDA device here: the GPU rows and the from-scratch run are skipped")
    updates: dict[str, dict[str, float]] = {}
    for head in HEADS:
        updates[head] = {"cpu": _ms_per_update(head, torch.device("cpu"), args.cpu_repeats)}
        if gpu is not None:
            updates[head]["cuda"] = _ms_per_update(head, gpu, args.gpu_repeats)
        print(f"{HEADS[head]}: {updates[head]}", flush=True)
    print(f"\n| update, batch {BATCH} | CPU ms | GPU ms | GPU speed-up |\n|---|---:|---:|---:|")
    for head, times in updates.items():
        cuda = times.get("cuda")
        gpu_cells = f"{cuda:.1f} | {times['cpu'] / cuda:.1f}x" if cuda else "- | -"
        print(f"| {HEADS[head]} | {times['cpu']:.1f} | {gpu_cells} |")
    results: dict[str, Any] = {"machine": describe(), "update_ms": updates}
    if gpu is not None:
        seconds = deadline - time.perf_counter() - 20  # the run's final evaluation and checkpoint
        if seconds > 60:
            baseline = _scratch_baseline(args.out, seconds, gpu, args.threads)
            results["scratch_baseline"] = baseline
            print(f"\nfrom-scratch baseline, inverted_pendulum, batch 256, 1 update/step, on {gpu}: "
                  f"{baseline['step']:,} steps in {baseline['seconds']} s; evaluations (step, mean, std): "
                  f"{baseline['evals']}")  # fmt: skip
        else:
            print(f"\nno time left for the from-scratch run ({seconds:.0f} s)")
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
