"""The frozen encoder as collection runs it: onnxruntime (on a GPU through its CUDA provider) or torch."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from agent_runtime.spec import PolicySpec
from models.encoder import FrozenEncoder
from train.config import TrainConfig
from train.frames import Encode, torch_encode
from train.onnx_io import onnx_cuda_available

log = logging.getLogger(__name__)

ENCODER_ONNX_NAME = "encoder.onnx"
"""The run directory's export of the frozen encoder (onnxruntime runs only)."""


def encode_function(
    cfg: TrainConfig, encoder: FrozenEncoder | None, spec: PolicySpec, device: torch.device, onnx_dir: Path
) -> Encode | None:
    """The frozen encoder as collection runs it, on ``device``; ``None`` for runs without one.

    In onnxruntime (exported to ``onnx_dir``, checked against torch; on a GPU through onnxruntime's
    CUDA provider where onnxruntime-gpu is installed) or torch.
    """
    if encoder is None:
        return None
    cuda = (device.index or 0) if device.type == "cuda" else None
    if cfg.encoder_runtime == "onnxruntime" and (cuda is None or onnx_cuda_available()):
        from train.onnx_encoder import OnnxEncoder

        h, w, _ = spec.observation("pixels").shape
        return OnnxEncoder(encoder, onnx_dir / ENCODER_ONNX_NAME, (h, w), cfg.threads, cuda_device=cuda)
    if cfg.encoder_runtime == "onnxruntime":
        log.info(
            "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu): the frozen encoder runs in torch"
        )
    return torch_encode(encoder, device)
