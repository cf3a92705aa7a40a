"""Single-sample onnxruntime latency of conv student variants, side by side in one run.

Each variant (channels, pooling, MLP) is exported with the project's exporter and timed like the
report card times a student: batch of one, one onnxruntime thread, p50 and p99 after warm-up. The
weights are random: latency does not depend on them.

Usage: python -m bench.student_latency [--calls 2000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from distill.latency import onnx_latency
from models.student import ConvStudent
from train.onnx_io import export_onnx

VARIANTS = [  # (channels, downsample, hidden)
    (16, 2, (48, 48)),
    (16, 2, (64, 64)),
    (8, 2, (48, 48)),
    (16, 3, (48, 48)),
    (16, 1, (48, 48)),
]


class _ByName(torch.nn.Module):
    def __init__(self, student: ConvStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, pixels: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        return self.student({"pixels": pixels, "proprio": proprio})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    observation: dict[str, np.ndarray] = {
        "pixels": rng.integers(0, 256, (84, 84, 9), dtype=np.uint8),
        "proprio": np.zeros(1, np.float32),
    }
    example = (torch.from_numpy(observation["pixels"][None]).repeat(2, 1, 1, 1), torch.zeros(2, 1))
    print("| channels | pooling | MLP | parameters | p50 (us) | p99 (us) |")
    print("|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for channels, downsample, hidden in VARIANTS:
            bounds = (torch.tensor([-3.0]), torch.tensor([3.0]))
            student = ConvStudent((84, 84, 9), 1, *bounds, channels, downsample, hidden)
            model = export_onnx(_ByName(student.eval()), example, ["pixels", "proprio"], ["action"], what="the student")
            path = Path(tmp) / f"student-{channels}-{downsample}.onnx"
            onnx.save(model, str(path))
            latency = onnx_latency(path, observation, args.calls)
            parameters = sum(p.numel() for p in student.parameters())
            print(
                f"| {channels} | {downsample}x | {'-'.join(map(str, hidden))} | {parameters:,} | "
                f"{latency.p50_ms * 1000:.0f} | {latency.p99_ms * 1000:.0f} |"
            )


if __name__ == "__main__":
    main()
