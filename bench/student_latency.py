"""Single-sample onnxruntime latency of conv student variants, side by side in one run.

Each variant (channels, pooling, MLP) is exported with the project's exporter and timed like the
report card times a student: batch of one, one onnxruntime thread, p50 and p99 after warm-up; each
twice, as trained (pooling and pixel scaling as separate nodes) and in its inference form (both
folded into the first convolution: what `distill` exports). The weights are random: latency does not
depend on them.

Usage: python -m bench.student_latency [--calls 2000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from distill.export import ByName
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
    print("| channels | pooling | MLP | parameters | as trained p50 / p99 (us) | exported form p50 / p99 (us) |")
    print("|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for channels, downsample, hidden in VARIANTS:
            bounds = (torch.tensor([-3.0]), torch.tensor([3.0]))
            student = ConvStudent((84, 84, 9), 1, *bounds, channels, downsample, hidden).eval()
            cells = []
            for form in (student, student.inference_form()):
                names = ["pixels", "proprio"]
                model = export_onnx(ByName(form, tuple(names)), example, names, ["action"], "the student")
                path = Path(tmp) / f"student-{channels}-{downsample}.onnx"
                onnx.save(model, str(path))
                latency = onnx_latency(path, observation, args.calls)
                cells.append(f"{latency.p50_ms * 1000:.0f} / {latency.p99_ms * 1000:.0f}")
            parameters = sum(p.numel() for p in student.parameters())
            mlp = "-".join(map(str, hidden))
            print(f"| {channels} | {downsample}x | {mlp} | {parameters:,} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
