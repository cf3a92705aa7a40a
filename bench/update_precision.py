"""One SAC update (batch 256) of the pixel heads: layouts, precisions and shift kernels, side by side in one run.

For the from-scratch DrQ-v2 encoder: plain NCHW float32 (the layout before channels-last) with the
random shift as first written (replicate padding, then an element-wise crop on a float copy),
channels-last with that shift, channels-last with today's shift (a gather of clamped source cells,
in uint8), and the same under bfloat16 autocast (``--sac.head-precision bfloat16``). For the frozen
features with the default conv neck: float32, bfloat16, and the feature shift
(``--sac.feature-shift 1``) with the first and today's kernel (a row gather of channels-last cells,
in half precision). For ``--finetune-last-stage``: the encoder's stage 2 trained on the stored
stage-1 maps, in float32 and bfloat16. For ``--update-bn-statistics`` (PIE-G): that stage frozen, its
BatchNorm layers normalizing each batch and updating their statistics. ``levers``: issue 16's levers
that change the update (the FLARE neck, stage-3 maps, EfficientNet-Lite2's maps) beside the default,
on maps in the replay's cell order as training samples them.
Batches are random: the cost of an update does not depend on the values.

Usage: python -m bench.update_precision [--threads 2] [--repeats 5] [--heads scratch frozen levers finetune statistics]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import numpy as np
import torch

from models.scratch_encoder import ScratchConvEncoder
from train import sac as sac_module
from train.config import TrainConfig
from train.envs import build_spec
from train.overrides import Override, apply_overrides
from train.presets import get_preset
from train.replay import Batch
from train.sac import SAC
from train.teacher import build_encoder, build_learner, frame_shape, proprio_dim

BATCH = 256
HEADS = ("scratch", "frozen", "levers", "finetune", "statistics")
Changes = tuple[Override, ...]
"""Training settings a row changes (``train.overrides``), e.g. ``(("neck", "flare"),)``."""


def _learner(
    representation: str,
    precision: str,
    feature_shift: int,
    finetune: bool,
    device: torch.device | None = None,
    changes: Changes = (),
) -> tuple[SAC, Batch]:
    cfg = TrainConfig(representation=representation, finetune_last_stage=finetune)  # type: ignore[arg-type]
    sac = dataclasses.replace(cfg.sac, head_precision=precision, feature_shift=feature_shift)  # type: ignore[arg-type]
    cfg = dataclasses.replace(cfg, sac=sac, encoder=dataclasses.replace(cfg.encoder, weights="none"))
    cfg = apply_overrides(cfg, changes)
    spec = build_spec(get_preset(cfg.preset), cfg.observation_mode)
    encoder = build_encoder(cfg)
    torch.manual_seed(0)
    agent = build_learner(cfg, spec, encoder, device)
    shape = (BATCH, 3, *frame_shape(cfg, spec, encoder))
    rng = np.random.default_rng(0)
    frames = (
        rng.standard_normal(shape).astype(np.float16)
        if representation == "frozen"
        else rng.integers(0, 256, shape, dtype=np.uint8)
    )
    proprio = np.zeros((BATCH, proprio_dim(cfg, spec)), np.float32)
    action = np.zeros((BATCH, spec.action.dim), np.float32)
    batch = Batch(frames, proprio, action, np.zeros(BATCH, np.float32), np.ones(BATCH, np.float32), frames, proprio)
    return agent, batch


def _plain_nchw(encoder: ScratchConvEncoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder's forward as it was before channels-last: contiguous NCHW weights and inputs."""
    encoder.net.to(memory_format=torch.contiguous_format)

    def forward(frames: torch.Tensor) -> torch.Tensor:
        b, k, h, w, _ = frames.shape
        x = frames.permute(0, 1, 4, 2, 3).reshape(b, 3 * k, h, w).float() / 255.0 - 0.5
        return encoder.net(x).flatten(1).unsqueeze(1)

    return forward


def _pad_and_crop(maps: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """The random shift as first written: a replicate-padded float copy, cropped element by element."""
    b, c, h, w = maps.shape
    x = torch.nn.functional.pad(maps.float(), (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w)).view(b, 1, 1, w)
    return x[torch.arange(b).view(b, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


def _first_frame_shift(frames: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    b, k, h, w, c = frames.shape
    x = _pad_and_crop(frames.permute(0, 1, 4, 2, 3).reshape(b, k * c, h, w), pad, generator)
    return x.round().to(torch.uint8).view(b, k, c, h, w).permute(0, 1, 3, 4, 2).contiguous()


def _first_feature_shift(features: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    b, k, c, h, w = features.shape
    return _pad_and_crop(features.reshape(b, k * c, h, w), pad, generator).view(b, k, c, h, w)


def _ms_per_update(agent: SAC, batch: Batch, repeats: int) -> float:
    agent.update(batch)  # warm-up: oneDNN picks and caches its kernels
    began = time.perf_counter()
    for _ in range(repeats):
        agent.update(batch)
    return (time.perf_counter() - began) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per row (frozen rows: 10x this)")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS), help="which rows to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, float, float]] = []  # label, ms, ms of its head's first row
    head, baseline = "", 0.0
    today = (sac_module.random_shift, sac_module.random_shift_features)
    first = (_first_frame_shift, _first_feature_shift)
    pie_g: Changes = (("update_bn_statistics", "true"),)
    lite2: Changes = (("encoder.name", "tf_efficientnet_lite2"),)
    rows_to_run: list[tuple[str, str, str, bool, tuple[Callable[..., torch.Tensor], ...], int, Changes]] = [
        ("scratch (DrQ-v2 encoder), NCHW, float32, first shift", "scratch", "float32", True, first, 0, ()),
        ("scratch, channels-last, float32, first shift", "scratch", "float32", False, first, 0, ()),
        ("scratch, channels-last, float32 (default)", "scratch", "float32", False, today, 0, ()),
        ("scratch, channels-last, bfloat16 autocast", "scratch", "bfloat16", False, today, 0, ()),
        ("frozen stage-2 maps + conv neck, float32, no shift", "frozen", "float32", False, today, 0, ()),
        ("frozen stage-2 maps + conv neck, bfloat16 autocast, no shift", "frozen", "bfloat16", False, today, 0, ()),
        ("frozen, feature shift 1, first shift", "frozen", "float32", False, first, 1, ()),
        ("frozen, feature shift 1 (default)", "frozen", "float32", False, today, 1, ()),
        # Issue 16's levers that change the update, against the default in the same head.
        ("levers: the default (stage-2 maps, conv neck, feature shift 1)", "levers", "float32", False, today, 1, ()),
        ("levers: FLARE neck", "levers", "float32", False, today, 1, (("neck", "flare"),)),
        ("levers: stage-3 maps (112x6x6)", "levers", "float32", False, today, 1, (("encoder.stage", "3"),)),
        ("levers: EfficientNet-Lite2 stage-2 maps", "levers", "float32", False, today, 1, lite2),
        ("fine-tuned stage 2 on stage-1 maps + conv neck, float32", "finetune", "float32", False, today, 1, ()),
        ("fine-tuned stage 2, bfloat16 autocast", "finetune", "bfloat16", False, today, 1, ()),
        ("frozen stage 2, BatchNorm statistics updating (PIE-G)", "statistics", "float32", False, today, 1, pie_g),
    ]
    for label, kind, precision, plain, shifts, feature_shift, changes in rows_to_run:
        if kind not in args.heads:
            continue
        representation = "scratch" if kind == "scratch" else "frozen"
        agent, batch = _learner(representation, precision, feature_shift, kind == "finetune", changes=changes)
        if kind == "levers":  # the maps in the replay's cell order, (B, h, w, k, C) in memory, as training has them
            maps = np.ascontiguousarray(batch.frames.transpose(0, 3, 4, 1, 2)).transpose(0, 3, 4, 1, 2)
            batch = batch._replace(frames=maps, next_frames=maps)
        if plain:
            assert agent.head.scratch is not None
            agent.head.scratch.forward = _plain_nchw(agent.head.scratch)  # type: ignore[method-assign, assignment]
        sac_module.random_shift, sac_module.random_shift_features = shifts
        try:
            ms = _ms_per_update(agent, batch, args.repeats * (10 if kind in ("frozen", "levers") else 1))
        finally:
            sac_module.random_shift, sac_module.random_shift_features = today
        if kind != head:
            head, baseline = kind, ms  # the first row of each head is the baseline of the rows after it
        rows.append((label, ms, baseline))
        print(f"{label}: {ms:.1f} ms", flush=True)
    print(f"\n| update (batch {BATCH}, {args.threads} threads) | ms | speed vs the head's first row |\n|---|---:|---:|")
    for label, ms, base in rows:
        print(f"| {label} | {ms:.1f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
