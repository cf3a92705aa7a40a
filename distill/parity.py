"""Does onnxruntime compute what torch computes? Checked on real observations, sample by sample."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from agent_runtime.spec import ONNX_ACTION_OUTPUT
from distill.errors import ParityError

PARITY_ATOL = 1e-4
"""Largest absolute difference in any action dimension allowed between onnxruntime and torch (issue 4).
Float32 reordering differences through an EfficientNet and a small MLP stay near 1e-6."""

_BATCH_PROBE = 7
"""Observations run as one batch in onnxruntime to prove the batch axis is really dynamic."""


@dataclass(frozen=True)
class ParityResult:
    """Outcome of a parity check.

    Attributes:
        observations: how many observations were compared.
        max_abs_diff: the largest absolute action difference over all of them and all dimensions.
        worst_index: the observation where it occurred.
        onnx_actions: onnxruntime's actions, float32 (N, A).
    """

    observations: int
    max_abs_diff: float
    worst_index: int
    onnx_actions: np.ndarray


def check_parity(
    module: nn.Module,
    session: ort.InferenceSession,
    observations: Mapping[str, np.ndarray],
    atol: float = PARITY_ATOL,
    torch_batch: int = 64,
) -> ParityResult:
    """Compare ``session``'s actions with ``module``'s on every observation; raise if they differ.

    onnxruntime runs one observation per call, as a robot's server does; torch, the reference, runs
    in batches of ``torch_batch``. Then the first few observations go through onnxruntime as one
    batch, which must give the same actions as one at a time.

    Args:
        module: the torch policy, observation dict -> float (B, A) (or (B, H, A) chunks); in eval mode.
        session: the exported policy.
        observations: entry name -> array (N, ...), in the order of the graph's inputs.
        atol: the tolerance on the max absolute difference.
        torch_batch: observations per torch call.

    Raises:
        ParityError: naming the worst observation's index, both actions and their difference.
    """
    count = len(next(iter(observations.values())))
    reference = []
    with torch.no_grad():
        for start in range(0, count, torch_batch):
            rows = slice(start, start + torch_batch)
            batch = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in observations.items()}
            reference.append(module(batch).numpy())
    expected = np.concatenate(reference)
    got = np.concatenate([_run(session, observations, slice(i, i + 1)) for i in range(count)])
    if got.shape != expected.shape:
        raise ParityError(f"onnxruntime's actions have shape {got.shape}; torch's have {expected.shape}")
    # NaN compares false with everything; count it as infinitely wrong.
    diff = np.nan_to_num(np.abs(got.astype(np.float64) - expected), nan=np.inf).reshape(count, -1).max(axis=1)
    worst = int(np.argmax(diff))
    if not diff[worst] <= atol:
        raise ParityError(
            f"onnxruntime and torch disagree on observation {worst} of {count}: torch gives action "
            f"{_fmt(expected[worst])}, onnxruntime {_fmt(got[worst])}; max abs difference {diff[worst]:.3g} "
            f"> {atol:g} allowed. The exported graph does not compute what the module does (Python control "
            "flow on tensor values is frozen by tracing; some operators export approximately)"
        )
    probe = slice(0, min(_BATCH_PROBE, count))
    batched = _run(session, observations, probe)
    batch_diff = float(np.nan_to_num(np.abs(batched - got[probe]), nan=np.inf).max())
    if not batch_diff <= atol:
        raise ParityError(
            f"onnxruntime gives other actions for observations 0..{probe.stop - 1} in one batch than one at a "
            f"time (max abs difference {batch_diff:.3g} > {atol:g}): the graph's batch axis is not truly dynamic"
        )
    return ParityResult(count, float(diff[worst]), worst, got)


def _run(session: ort.InferenceSession, observations: Mapping[str, np.ndarray], rows: slice) -> np.ndarray:
    feed = {k: np.ascontiguousarray(v[rows]) for k, v in observations.items()}
    return np.asarray(session.run([ONNX_ACTION_OUTPUT], feed)[0])


def _fmt(action: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:.6g}" for x in action.ravel()) + "]"
