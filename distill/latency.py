"""Numbers for the report card: single-sample latency in onnxruntime on one CPU thread, parameter counts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from agent_runtime.spec import ONNX_ACTION_OUTPUT
from train.onnx_io import cpu_session


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one ``session.run`` with a batch of one, in milliseconds."""

    p50_ms: float
    p99_ms: float
    calls: int


def onnx_latency(path: Path, observation: Mapping[str, np.ndarray], calls: int = 1000, warmup: int = 20) -> Latency:
    """Time ``calls`` single-sample runs of an exported policy on one onnxruntime CPU thread.

    One thread, no spinning: a robot host's server shares its cores. The first ``warmup`` calls
    (allocations, caches) are not timed.

    Args:
        path: the ``.onnx`` file.
        observation: one observation, entry name -> unbatched array (as the environment gives it).
        calls: timed calls.
        warmup: untimed calls first.
    """
    if calls < 1:
        raise ValueError(f"calls is {calls}; time at least one call")
    session = cpu_session(path, threads=1)
    feed = {name: np.ascontiguousarray(value[None]) for name, value in observation.items()}
    for _ in range(warmup):
        session.run([ONNX_ACTION_OUTPUT], feed)
    times_ns = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        start = time.perf_counter_ns()
        session.run([ONNX_ACTION_OUTPUT], feed)
        times_ns[i] = time.perf_counter_ns() - start
    p50, p99 = np.percentile(times_ns, [50, 99]) / 1e6
    return Latency(float(p50), float(p99), calls)


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Parameters of ``module`` (trainable or frozen; buffers not counted): ``total`` and per child.

    For a teacher policy: ``{"total": ..., "head": ..., "actor": ..., "encoder": ...}``.
    """
    counts = {"total": sum(p.numel() for p in module.parameters())}
    for name, child in module.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    return counts
