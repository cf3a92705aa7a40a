"""Run the frozen encoder through onnxruntime while collecting experience.

On these 2-core CPUs onnxruntime runs timm encoders 2-4x faster than torch eager, and one frame per
environment step is the worst case for torch's per-operator overhead (shared/FACTS.md: 13 ms in
torch against 3 ms in onnxruntime for one 84x84 frame through tf_efficientnet_lite0). The encoder is
exported once per run, and the export is checked against torch before it is used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import torch

from models.encoder import FrozenEncoder
from train.onnx_io import OnnxExportError, cpu_session, export_onnx

log = logging.getLogger(__name__)

# Largest difference in any feature allowed between torch and onnxruntime. Features are stored in
# half precision (about 3 significant digits), so agreement far below that is all that matters.
PARITY_ATOL = 1e-3


class OnnxEncoder:
    """The same function as a :class:`FrozenEncoder`, uint8 (N, H, W, 3) -> float32 features.

    Args:
        encoder: the torch encoder to export.
        path: where to write the ONNX file.
        frame_hw: (H, W) of the frames it will see.
        threads: onnxruntime intra-op threads.
        cuda_device: run on this GPU (onnxruntime's CUDA provider) instead of the CPU.
    """

    def __init__(
        self,
        encoder: FrozenEncoder,
        path: Path,
        frame_hw: tuple[int, int],
        threads: int,
        cuda_device: int | None = None,
    ) -> None:
        problem = encoder.export_problem(*frame_hw)
        if problem is not None:  # before the exporter, which would print its whole graph on the way out
            raise RuntimeError(problem)
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = torch.randint(0, 256, (4, *frame_hw, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        try:
            model = export_onnx(encoder, (probe,), ["frames"], ["features"], what="the encoder")
        except OnnxExportError as exc:
            raise RuntimeError(f"{exc}; or train with --encoder-runtime torch") from exc
        onnx.save(model, str(path))
        self.session = cpu_session(path, threads, cuda_device)
        with torch.no_grad():
            expected = encoder(probe).numpy()
        worst = float(np.abs(self(probe.numpy()) - expected).max())
        if worst > PARITY_ATOL:
            raise RuntimeError(
                f"the ONNX export of the encoder differs from torch by {worst:.2e} (allowed {PARITY_ATOL}); "
                "train with --encoder-runtime torch"
            )
        log.info("encoder exported to %s; onnxruntime matches torch within %.1e", path, worst)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Features of uint8 frames (N, H, W, 3): float32 (N, ...)."""
        (features,) = self.session.run(None, {"frames": np.ascontiguousarray(frames)})
        return np.asarray(features)
