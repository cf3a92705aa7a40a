"""Export a policy to one ONNX file that holds everything between sensor and actuator.

In: the spec's observation entries (uint8 pixels and float32 proprio, or a float32 state), with a
dynamic batch axis. Inside: the resize to the encoder's input size (where it differs),
normalization, the network, tanh and the scaling to the action bounds. Out: ``action`` float32
(batch, A), or (batch, H, A) for a policy with action chunks; within the bounds up to float32
rounding, so a runtime clips. The spec, with the hash of the weights, rides in the metadata.

Nothing reaches the target path until the file has passed every check: the ONNX checker, the
contract on inputs and output, and parity with torch on real observations (issue 4). It is written
under a temporary name in the target directory and renamed; on any failure that name is removed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from agent_runtime.files import replacing
from agent_runtime.spec import ONNX_ACTION_OUTPUT, PolicySpec
from distill.actors import torch_actor
from distill.collect import collect_observations
from distill.errors import ExportError
from distill.export_config import ExportConfig
from distill.latency import onnx_latency, parameter_counts
from distill.onnx_contract import attach_spec, check_interface, declare_action_shape
from distill.parity import PARITY_ATOL, ParityResult, check_parity
from distill.run_policy import load_run_policy
from models.encoder import FrozenEncoder
from models.student import Student
from train.onnx_io import ONNX_OPSET, OnnxExportError, cpu_session, export_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_policy` wrote and measured.

    Attributes:
        path: the ONNX file.
        spec: the spec in its metadata (``model_sha256`` filled in).
        parity: the parity check's outcome.
    """

    path: Path
    spec: PolicySpec
    parity: ParityResult


class ByName(nn.Module):
    """Positional inputs (the exporter's view) to the observation dict a policy takes."""

    def __init__(self, policy: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.policy, self.names = policy, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """One tensor per observation entry, in spec order -> float (B, A)."""
        return self.policy(dict(zip(self.names, inputs, strict=True)))


def export_policy(
    module: nn.Module,
    spec: PolicySpec,
    out: Path,
    observations: Mapping[str, np.ndarray],
    atol: float = PARITY_ATOL,
) -> ExportResult:
    """Export ``module`` to ``out`` and prove onnxruntime matches torch on ``observations``.

    Works for any policy module, teacher or student: it only has to map the observation dict of
    ``spec`` (entry name -> tensor with a batch axis first) to the deterministic action within the
    bounds, float (B, A). The module is put in eval mode. A student is exported in its
    :meth:`~models.student.Student.inference_form` (the same function in cheaper operations); parity
    is checked against the module as given.

    Args:
        module: the torch policy.
        spec: its spec; the file carries it with ``provenance.model_sha256`` set.
        out: the ``.onnx`` path; an existing file there is replaced only by a fully checked one.
        observations: real observations, entry name -> array (N, ...); N >= 2.
        atol: parity tolerance on the max absolute action difference.

    Raises:
        ExportError: ``out`` cannot be written, the exporter refused the module, or the graph breaks
            the contract (checker, inputs, output, action bounds).
        ParityError: onnxruntime and torch differ by more than ``atol``, naming the worst observation.
        ObservationError: ``observations`` do not match ``spec``.
    """
    spec.check_observation(dict(observations), batched=True)
    if len(next(iter(observations.values()))) < 2:
        raise ValueError("export needs at least 2 observations: the trace runs on a batch of 2")
    names = spec.observation_names
    frames = [o.shape for o in spec.observations if o.name == "pixels"]
    for encoder in (m for m in module.modules() if isinstance(m, FrozenEncoder)):
        problem = encoder.export_problem(frames[0][0], frames[0][1]) if frames else None
        if problem is not None:  # before the exporter, which would print its whole graph on the way out
            raise ExportError(problem)
    check_output_path(out)
    with replacing(out) as tmp:
        module.eval()
        traced = module.inference_form() if isinstance(module, Student) else module
        # Two real observations as the example: a batch of one would invite the tracer to fold the
        # batch size into shapes.
        example = tuple(torch.from_numpy(np.ascontiguousarray(observations[n][:2])) for n in names)
        try:
            model = export_onnx(ByName(traced, names), example, names, [ONNX_ACTION_OUTPUT], what="the policy")
        except OnnxExportError as exc:
            raise ExportError(str(exc)) from exc
        declare_action_shape(model, spec)
        check_interface(model, spec)
        final_spec = attach_spec(model, spec)
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported graph fails the ONNX checker: {exc}") from exc
        try:
            onnx.save(model, str(tmp))
        except OSError as exc:
            raise ExportError(f"cannot write {out}: {exc}") from exc
        # What is checked is the file on disk, read back by onnxruntime as the server will.
        parity = check_parity(module, cpu_session(tmp, threads=1), {n: observations[n] for n in names}, atol)
        _check_bounds(parity.onnx_actions, final_spec, atol)
    log.info("exported %s; onnxruntime matches torch within %.1e", out, parity.max_abs_diff)
    return ExportResult(out, final_spec, parity)


def check_output_path(out: Path) -> None:
    """Raise :class:`ExportError` now, before any slow work, if ``out`` cannot be written.

    An empty, unique file is created beside ``out`` and removed again: the OS decides writability.
    """
    if out.is_dir():
        raise ExportError(f"cannot write {out}: it is a directory; give a file path such as {out / 'policy.onnx'}")
    parent = out.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ExportError(f"cannot write {out}: {parent} {what}; create the directory or choose another --out")
    probe = parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    try:
        probe.open("xb").close()
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc} (in {parent})") from exc
    probe.unlink()


def _check_bounds(actions: np.ndarray, spec: PolicySpec, atol: float) -> None:
    low, high = np.asarray(spec.action.low), np.asarray(spec.action.high)
    outside = (actions < low - atol) | (actions > high + atol)
    if outside.any():
        index = tuple(int(i) for i in np.argwhere(outside)[0])  # (row, dim), or (row, step, dim) for a chunk
        row, dim = index[0], index[-1]
        raise ExportError(
            f"the exported policy's action '{spec.action.names[dim]}' is {actions[index]:.6g} on observation "
            f"{row}, outside its bounds [{low[dim]:g}, {high[dim]:g}]: the module must squash and scale its action"
        )


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Export the policy of ``cfg.run_dir`` as ``cfg`` says; returns a summary (plain JSON types).

    Raises:
        CheckpointError: missing or unreadable run directory or checkpoint.
        SpecMismatchError: the task preset changed since the run.
        ExportError: ``cfg.output_path`` cannot be written, or the export breaks its contract.
        ParityError: onnxruntime and torch disagree on the collected observations.
    """
    out = cfg.output_path
    torch.set_num_threads(cfg.threads)
    run = load_run_policy(cfg.run_dir)
    check_output_path(out)  # before the slow part; a missing run directory is reported as such first
    actor = torch_actor(run.module) if cfg.collect_with == "policy" else None
    observations = collect_observations(run.preset, run.mode, cfg.parity_observations, cfg.seed, actor)
    result = export_policy(run.module, run.spec, out, observations)
    summary: dict[str, Any] = {
        "onnx": str(out),
        "run_dir": str(cfg.run_dir),
        "checkpoint": str(run.checkpoint),
        "preset": run.preset,
        "policy": run.spec.provenance.policy,
        "opset": ONNX_OPSET,
        "inputs": {o.name: [o.dtype, ["batch", *o.shape]] for o in run.spec.observations},
        "output": [ONNX_ACTION_OUTPUT, "float32", ["batch", *run.spec.action_shape]],
        "weights_sha256": result.spec.provenance.model_sha256,
        "spec_format_version": result.spec.format_version,
        "file_bytes": out.stat().st_size,
        "parameters": parameter_counts(run.module),
        "parity": {
            "observations": result.parity.observations,
            "collected_with": cfg.collect_with,
            "seed": cfg.seed,
            "max_abs_diff": result.parity.max_abs_diff,
            "worst_index": result.parity.worst_index,
            "atol": PARITY_ATOL,
        },
        "latency_ms": None,
    }
    if cfg.latency_calls:
        latency = onnx_latency(out, {k: v[0] for k, v in observations.items()}, cfg.latency_calls)
        summary["latency_ms"] = {"p50": latency.p50_ms, "p99": latency.p99_ms, "calls": latency.calls, "threads": 1}
    return summary


def summary_text(summary: Mapping[str, Any]) -> str:
    """A few lines for people: where the file went, its contract, parity and speed."""
    parity = summary["parity"]
    inputs = ", ".join(f"{name} {dtype} {tuple(shape)}" for name, (dtype, shape) in summary["inputs"].items())
    lines = [
        f"exported {summary['policy'] or 'policy'} on {summary['preset']} to {summary['onnx']} "
        f"({summary['file_bytes'] / 1e6:.2f} MB, opset {summary['opset']}, "
        f"{summary['parameters']['total']:,} parameters)",
        f"inputs: {inputs}; output: action float32 ({', '.join(str(d) for d in summary['output'][2])})",
        f"parity: onnxruntime matches torch within {parity['max_abs_diff']:.1e} (allowed {parity['atol']:g}) on "
        f"{parity['observations']} observations",
        f"weights sha256: {summary['weights_sha256']}",
    ]
    latency = summary["latency_ms"]
    if latency is not None:
        lines.append(
            f"latency, batch 1, one onnxruntime thread: p50 {latency['p50']:.3f} ms, p99 {latency['p99']:.3f} ms "
            f"over {latency['calls']} calls"
        )
    return "\n".join(lines)
