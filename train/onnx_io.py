"""Torch module to ONNX, and ONNX file to a CPU onnxruntime session.

The plumbing shared by the frozen encoder that runs in onnxruntime while training and by the
exported policy (``distill.export``).

Exporter: torch's TorchScript-based ("legacy") exporter, ``dynamo=False``. The newer exporter
(``dynamo=True``) needs the ``onnxscript`` package, which the train extra does not install
(shared/FACTS.md); the legacy one needs nothing more, and opset 20 is the newest it supports
(torch 2.15 writes opset 21 too, but warns that it is unsupported).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import torch
from torch import nn

ONNX_OPSET = 20
"""The opset of every graph we export: the newest the legacy exporter supports."""


class OnnxExportError(RuntimeError):
    """A module cannot be exported to ONNX; the message says why and, where known, what to change."""


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    what: str,
) -> onnx.ModelProto:
    """Trace ``module`` (put in eval mode) into an ONNX model, a dynamic batch axis first on every input and output.

    Args:
        module: takes the inputs positionally, returns one tensor per output name.
        example_inputs: one tensor per input name, batch axis first; only their shapes and dtypes
            matter, except where the module branches on values in Python (the trace keeps one branch).
        input_names: graph input names, in order.
        output_names: graph output names, in order.
        what: how error messages name the module, e.g. ``"the encoder"``.

    Raises:
        OnnxExportError: the exporter refused the module.
    """
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)}
    with warnings.catch_warnings():
        # Shapes other than the batch axis are fixed (by the policy spec, or the run), so the tracer baking shape
        # checks into the graph is intended; the legacy exporter's deprecation notice is known.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            torch.onnx.export(
                module.eval(),
                example_inputs,
                buffer,  # type: ignore[arg-type]  # typed for paths, but the legacy exporter writes file objects too
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        except torch.onnx.errors.OnnxExporterError as exc:
            hint = ""
            if "_aa" in str(exc):
                hint = " (antialiased shrinking does not export: use encoder.input_size >= the frame size)"
            raise OnnxExportError(f"{what} cannot be exported to ONNX: {exc}{hint}") from exc
    return onnx.load_from_string(buffer.getvalue())


def onnx_cuda_available() -> bool:
    """Whether this onnxruntime can run on a GPU (the ``onnxruntime-gpu`` build is installed)."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


def cpu_session(path: Path, threads: int, cuda_device: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session on ``threads`` intra-op threads that do not spin while idle.

    With ``cuda_device`` the session runs on that GPU through the CUDA provider (falling back to the
    CPU for any operator the provider lacks).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle onnxruntime threads spin by default, burning the cores a torch update (or a robot's
    # control loop) needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = ["CPUExecutionProvider"]
    if cuda_device is not None:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_device}))
    return ort.InferenceSession(str(path), options, providers=providers)
