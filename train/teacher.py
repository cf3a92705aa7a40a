"""Build the learner for a run, and rebuild a trained teacher as a deployable policy."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import torch

from agent_runtime.spec import PolicySpec
from models.actor import TanhGaussianActor
from models.encoder import FrozenEncoder
from models.last_stage import split_last_stage
from models.policy import ObservationHead, Policy
from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.sac import SAC


def history(cfg: TrainConfig, spec: PolicySpec) -> int:
    """Frames per observation: the pixel entry's history, or 1 for a state vector."""
    return 1 if cfg.representation == "state" else spec.observation("pixels").history


def proprio_dim(cfg: TrainConfig, spec: PolicySpec) -> int:
    """Length of the proprio vector the environment gives and the replay stores (0 for a state vector or none)."""
    if cfg.representation == "state" or "proprio" not in spec.observation_names:
        return 0
    return spec.observation("proprio").shape[0]


def joined_proprio_dim(cfg: TrainConfig, spec: PolicySpec) -> int:
    """Length of the proprio joined after the neck: all of it, or none with ``proprio`` off."""
    return proprio_dim(cfg, spec) if cfg.proprio else 0


def frame_shape(cfg: TrainConfig, spec: PolicySpec, encoder: FrozenEncoder | None) -> tuple[int, ...]:
    """The shape of one stored frame for this run's representation."""
    if cfg.representation == "state":
        return spec.observation("state").shape
    h, w, _ = spec.observation("pixels").shape
    if encoder is None:
        return (h, w, 3)
    return encoder.output_shape((h, w))


def build_encoder(cfg: TrainConfig) -> FrozenEncoder | None:
    """The frozen encoder of a ``frozen`` run (without its last stage when that is fine-tuned), else ``None``."""
    if cfg.representation != "frozen":
        return None
    if cfg.splits_last_stage:
        prefix, _ = split_last_stage(cfg.encoder)
        return FrozenEncoder(prefix)
    return FrozenEncoder(cfg.encoder)


def build_head(cfg: TrainConfig, spec: PolicySpec, encoder: FrozenEncoder | None) -> ObservationHead:
    """The observation head for this run (holding the encoder's last stage when that is fine-tuned)."""
    last_stage = (
        split_last_stage(cfg.encoder, cfg.finetune_last_stage, cfg.update_bn_statistics)[1]
        if cfg.splits_last_stage
        else None
    )
    return ObservationHead(
        cfg.representation,
        history(cfg, spec),
        frame_shape(cfg, spec, encoder),
        joined_proprio_dim(cfg, spec),
        cfg.sac.latent_dim,
        cfg.neck,
        last_stage,
    )


def build_learner(
    cfg: TrainConfig, spec: PolicySpec, encoder: FrozenEncoder | None, device: torch.device | None = None
) -> SAC:
    """A fresh SAC learner for this run on ``device`` (the CPU by default; seeded by the caller).

    Its random source (action noise, augmentation) is a generator on that device, seeded with the run's seed.
    """
    device = device or torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    low = torch.tensor(spec.action.low)
    high = torch.tensor(spec.action.high)
    # Moved after construction: the optimizers keep the same parameters, now on the device.
    return SAC(build_head(cfg, spec, encoder), low, high, cfg.sac, generator).to(device)


def policy_from_checkpoint(path: Path) -> tuple[Policy, PolicySpec, TrainConfig]:
    """The deployable teacher policy (raw observations in, bounded action out) of a checkpoint."""
    payload = load_checkpoint(path)
    cfg = config_from_dict(TrainConfig, payload["config"])
    spec = PolicySpec.from_dict(payload["spec"])
    # The checkpoint carries the encoder's weights (and a fine-tuned last stage's, in the head), so
    # the teacher needs no weight source.
    rebuild = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights="none"))
    encoder = build_encoder(rebuild)
    if encoder is not None:
        encoder.load_state_dict(payload["encoder"])
    head = build_head(rebuild, spec, encoder)
    head.load_state_dict(payload["head"])
    actor = TanhGaussianActor(
        head.out_dim, torch.tensor(spec.action.low), torch.tensor(spec.action.high), cfg.sac.hidden
    )
    actor.load_state_dict(payload["actor"])
    return Policy(head, actor, encoder, history(cfg, spec)).eval(), spec, cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain built-in types (paths as strings), for checkpoints and JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """Inverse of :func:`config_to_dict`; unknown keys are an error naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(typing.cast(type, hint), value)
        elif hint is Path:
            value = Path(value)
        elif typing.get_origin(hint) is tuple or (
            isinstance(hint, types.UnionType) and any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
        ):
            value = tuple(value) if isinstance(value, list) else value
        kwargs[name] = value
    return cls(**kwargs)
