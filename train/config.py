"""Configuration of a training run: plain frozen dataclasses, importable without torch.

The CLI derives ``agent-runtime train``'s flags from :class:`TrainConfig`; each field's docstring is
its help text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.config import EncoderConfig
from models.policy_kinds import NeckKind, Representation
from train.presets import DEFAULT_PRESET, ObsMode

DEFAULT_STEPS = 30_000
"""A new run's target when --steps is not given (the issue's budget for InvertedPendulum)."""


DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda, or cuda:N for the N-th GPU"
_DEVICE_FORM = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str, field: str = "device") -> None:
    """Raise a ``ValueError`` naming ``field`` when ``name`` is not a device this project takes."""
    if not _DEVICE_FORM.fullmatch(name):
        raise ValueError(f"{field} is {name!r}; use {DEVICE_HELP}")


def require_at_least_one(config: object, names: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming the first field of ``names`` whose value is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} is {getattr(config, name)}; it must be at least 1")


@dataclass(frozen=True)
class SACConfig:
    """Hyperparameters of the actor-critic update."""

    gamma: float = 0.99
    """Discount per policy step."""
    tau: float = 0.01
    """Target critic update rate (Polyak averaging per update)."""
    actor_lr: float = 3e-4
    """Actor learning rate (Adam)."""
    critic_lr: float = 3e-4
    """Critic and observation head learning rate (Adam)."""
    alpha_lr: float = 3e-4
    """Temperature learning rate (Adam)."""
    init_temperature: float = 0.1
    """Initial entropy temperature alpha."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of actor and critics."""
    latent_dim: int = 50
    """Output size of the neck."""
    augment_pad: int = 4
    """Random-shift augmentation of raw pixels (from-scratch baseline only), in pixels; 0 turns it off."""
    encoder_lr: float = 1e-4
    """Learning rate of the encoder's last stage when it is fine-tuned (--finetune-last-stage)."""
    feature_shift: int = 1
    """Random-shift augmentation of frozen spatial feature maps, in feature cells (a stride-8 cell is 8
    pixels); 0 turns it off. Costs no re-encoding and about nothing per update: the stored maps are
    shifted at update time. Measured on reacher (3 seeds): -8 passed at 5k steps instead of 25-35k, and
    -4.7 mean at 15k where unshifted runs were at -9.3; on inverted_pendulum 1000 at 7.5k, 7.5k and 10k
    (unshifted: 5k, 10k and 5k). BENCHMARKS.md."""
    head_precision: Literal["float32", "bfloat16"] = "float32"
    """Precision of the observation head (neck, and the from-scratch encoder) in updates. bfloat16 runs
    it under torch's CPU autocast: on a 2-core CPU with AMX (Intel Sapphire Rapids) an update was
    1.4-2.2x faster with the from-scratch encoder and 1.0-1.3x with the frozen conv neck
    (`python -m bench.update_precision`). Actor, critics, acting, evaluation and export stay float32."""

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"sac.gamma is {self.gamma}; it must be in (0, 1]")
        if not 0 < self.tau <= 1:
            raise ValueError(f"sac.tau is {self.tau}; it must be in (0, 1]")
        for name in ("augment_pad", "feature_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"sac.{name} is {getattr(self, name)}; it must not be negative (0 turns it off)")
        if self.init_temperature <= 0:
            raise ValueError(f"sac.init_temperature is {self.init_temperature}; it must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """Train a teacher policy with soft actor-critic, from camera pixels or from state."""

    preset: str = DEFAULT_PRESET
    """Task preset: a built-in name (see `agent-runtime presets`) or a preset file, PATH.toml."""
    representation: Representation = "frozen"
    """frozen: pretrained timm features of the camera frames (+ proprio); scratch: DrQ-v2 conv encoder
    trained end to end on pixels (+ proprio); state: the full state vector."""
    neck: NeckKind = "conv"
    """Compression neck on frozen features: conv (spatial maps), flare (the conv neck on each frame's
    latent map beside the differences between consecutive frames, FLARE's latent flow; needs a frame
    history of 2 or more), or linear (pooled or flattened maps). Measured on inverted_pendulum, seed 0:
    stage-2 maps with the conv neck reached 1000 by 5k steps; pooled embeddings with the linear neck
    129 after 30k (BENCHMARKS.md)."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(input_size=84, output="spatial", stage=2))
    """The frozen vision encoder (representation 'frozen' only). Training's default differs from the
    encoder's own (pooled, at the model's input size): stage-2 feature maps of 84x84 frames."""
    proprio: bool = True
    """Join the robot's own joint readings (the preset's proprio) to the features after the neck. Off,
    the policy acts from camera frames alone (an ablation; the proprio input stays in the spec, unused).
    A preset without joint readings has no proprio to join either way: its spec has no proprio entry."""
    finetune_last_stage: bool = False
    """Fine-tune the encoder's last stage (encoder.stage) with the critic loss, at sac.encoder_lr: RL
    fine-tuning of the pretrained model. The frozen stages before it still run once per step and the
    replay stores their maps. Off by default: the stage's forward and backward pass in every update made
    it 74x slower on a 2-core CPU (2.7 s against 36 ms, BENCHMARKS.md)."""
    update_bn_statistics: bool = False
    """PIE-G's recipe: the encoder's last stage (encoder.stage) runs in every update with its BatchNorm
    layers in training mode, so each replay batch is normalized with its own statistics and the running
    statistics (what acting and the deployed policy use) follow the task's frames; its weights stay
    frozen unless finetune_last_stage. Split as fine-tuning splits: the replay stores the maps of the
    stage before. Off by default: the stage's forward pass in every update costs many times the rest of
    the update on a CPU (BENCHMARKS.md)."""
    encoder_runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    """Where the frozen encoder runs while collecting: onnxruntime (exported once per run and checked
    against torch; several times faster on CPUs) or torch."""
    sac: SACConfig = field(default_factory=SACConfig)
    """Actor-critic hyperparameters."""
    steps: int | None = None
    """Environment steps to train for (policy steps summed over environments; frames = steps x action repeat).
    Unset: 30,000 for a new run; on --resume, the target the run was started with."""
    num_envs: int = 1
    """Environments collecting in parallel, one process each when more than one."""
    seed: int = 0
    """Seed of everything random: networks, exploration, environments."""
    batch_size: int = 256
    """Transitions per gradient update."""
    updates_per_step: float = 1.0
    """Gradient updates per environment step (the update-to-data ratio). 0.5 is DrQ-v2's schedule, one
    update every second step: it halves the learner's work per step (BENCHMARKS.md has its speed and learning)."""
    collect_ahead: bool = False
    """Collect the next environment step in a thread while the updates of this one run, so that the
    collector acts one update behind the learner (a policy lag of one update, as asynchronous
    actor-learner setups have); the batches stay the same. For a GPU or a many-core machine: on a 2-core
    CPU it bought nothing, as the update keeps both cores busy (BENCHMARKS.md)."""
    collectors: int = 0
    """Collectors on Ray actors: 0 (the default) collects in this process and never imports Ray; N runs N
    collectors, each with its own num_envs environments (and as many CPUs), renderer and frozen encoder (on the
    CPU, one thread), on the Ray cluster of --ray-address. They collect the next round of
    steps while the learner updates on the last one (see max_policy_lag); a collector that dies is
    restarted by Ray and the run goes on without its unfinished episodes. Needs the ray extra."""
    ray_address: str | None = None
    """Ray cluster to join with --collectors (e.g. auto, head:6379, or ray://head:10001 for Ray Client, whose
    driver, learner and replay stay on this machine); unset: RAY_ADDRESS if set, else a cluster started on
    this node with `ray start`, else a new local instance with the CPUs Ray detects."""
    max_policy_lag: int = 16
    """With --collectors: the most learner updates the policy a collector acts with may be behind. Each round
    of collection takes as many steps per environment as keep it within this (at least one), so it must be
    at least collectors x num_envs x updates_per_step. The lag of every round is logged (perf/policy_lag)."""
    n_step: int = 1
    """Steps summed into each TD target. Measured on inverted_pendulum: 3 (DrQ-v2's choice) kept state
    SAC at 363 after 30k steps where 1 solved it by 15k; from pixels both reached 1000 by 5k (BENCHMARKS.md)."""
    learning_starts: int = 1_000
    """Environment steps of uniformly random actions before learning starts."""
    replay_capacity: int = 1_000_000
    """Observation slots kept (spread over the environments; an episode's end takes one extra slot);
    capped at twice `steps`, which always holds the whole run."""
    eval_every: int = 5_000
    """Evaluate the deterministic policy every this many environment steps."""
    eval_episodes: int = 5
    """Episodes per periodic evaluation, each on its own held-out seed: a progress signal."""
    final_eval_episodes: int = 100
    """Episodes of the final evaluation (held-out seeds; the periodic evaluations' are its first ones).
    summary.json reports them as the report card does: mean, median and IQM with 95% bootstrap
    intervals, failure rate with its Wilson interval, and the seeds of the worst episodes."""
    final_eval_seconds: float = 600.0
    """Most seconds the final evaluation may take: it starts no episode after that (the first always
    runs), and summary.json says how many ran."""
    failure_below: float | None = None
    """An evaluation episode whose return is below this counts as a failure, beside the task's own
    criterion (inverted_pendulum and walker2d: the episode terminated, i.e. it fell)."""
    checkpoint_every: int = 5_000
    """Write a checkpoint every this many environment steps (and at the end)."""
    video: bool = True
    """Record an mp4 of the first episode of the final evaluation."""
    video_size: int = 256
    """Side of the video frames in pixels (rendered from the policy's camera)."""
    run_dir: Path = Path("runs/teacher")
    """Where checkpoints, logs, the video and the summary go."""
    resume: bool = False
    """Continue the run in run_dir from its last checkpoint with its saved config; a --steps given here
    sets a new target (above the saved one it extends the run)."""
    threads: int = 2
    """torch CPU threads."""
    device: str = "auto"
    """Where the learner trains (networks, batches, updates): auto (CUDA when available, else the CPU),
    cpu, cuda, or cuda:N. Collection and evaluation act on the CPU with a copy of the policy; on a GPU the
    frozen encoder of in-process collection runs there too (onnxruntime's CUDA provider where
    onnxruntime-gpu is installed, else torch); Ray collectors encode on their CPU. Checkpoints are
    device-neutral: a run resumes, distills and exports on any device."""

    def __post_init__(self) -> None:
        unset_or_positive = () if self.steps is None else ("steps",)
        positive = (
            *unset_or_positive,
            "num_envs",
            "batch_size",
            "n_step",
            "eval_every",
            "eval_episodes",
            "final_eval_episodes",
            "checkpoint_every",
            "replay_capacity",
            "video_size",
            "threads",
        )
        require_at_least_one(self, positive)
        check_device_name(self.device)
        if not (math.isfinite(self.final_eval_seconds) and self.final_eval_seconds > 0):
            raise ValueError(f"final_eval_seconds is {self.final_eval_seconds}; it must be positive")
        if self.failure_below is not None and not math.isfinite(self.failure_below):
            raise ValueError(f"failure_below is {self.failure_below}; give a finite return (or leave it out)")
        if self.updates_per_step <= 0:
            raise ValueError(f"updates_per_step is {self.updates_per_step}; it must be positive")
        if self.collectors < 0:
            raise ValueError(f"collectors is {self.collectors}; use 0 (collect in this process) or more")
        if self.collectors > 0:
            if self.collect_ahead:
                raise ValueError("collect_ahead is for in-process collection; remote --collectors always collect ahead")
            least = math.ceil(self.lanes * self.updates_per_step)
            if self.max_policy_lag < least:
                raise ValueError(
                    f"max_policy_lag is {self.max_policy_lag}; with {self.lanes} environments collecting at "
                    f"{self.updates_per_step} updates per step one round of steps takes {least} updates, so give "
                    f"at least {least}"
                )
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts is {self.learning_starts}; it must not be negative")
        if self.representation not in ("frozen", "scratch", "state"):
            raise ValueError(f"representation is {self.representation!r}; use frozen, scratch or state")
        if not self.proprio and self.representation == "state":
            raise ValueError("proprio off needs a pixel representation (frozen or scratch): state has no proprio")
        for name in ("finetune_last_stage", "update_bn_statistics"):
            if getattr(self, name) and (self.representation != "frozen" or self.encoder.output != "spatial"):
                raise ValueError(f"{name} needs representation 'frozen' with encoder.output 'spatial' (a stage's map)")
        if self.representation == "frozen" and self.neck in ("conv", "flare") and self.encoder.output != "spatial":
            raise ValueError(
                f"neck {self.neck!r} needs spatial features: set encoder.output 'spatial' or neck 'linear'"
            )

    @property
    def splits_last_stage(self) -> bool:
        """Whether the encoder's last stage runs in the observation head (fine-tuned, or its statistics updated)."""
        return self.finetune_last_stage or self.update_bn_statistics

    @property
    def lanes(self) -> int:
        """Environments collecting, over all collectors: the replay keeps one lane for each."""
        return self.num_envs * max(self.collectors, 1)

    @property
    def round_steps(self) -> int:
        """Steps per environment in one round of remote collection: as many as max_policy_lag allows."""
        if self.collectors == 0:
            return 1
        return max(1, int(self.max_policy_lag // (self.lanes * self.updates_per_step)))

    @property
    def target_steps(self) -> int:
        """The steps to train for: --steps, or the default when unset (a resumed run has its saved target)."""
        return DEFAULT_STEPS if self.steps is None else self.steps

    @property
    def observation_mode(self) -> ObsMode:
        """The environment observation mode this representation needs."""
        return "state" if self.representation == "state" else "pixels"
