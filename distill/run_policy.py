"""The policy of a run directory, checked against the task preset it was trained on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from agent_runtime.spec import PolicySpec, SpecMismatchError
from distill.student_checkpoint import STUDENT_CHECKPOINT, load_student
from train.checkpoint import CheckpointError
from train.envs import build_spec, observation_mode
from train.presets import ObsMode, get_preset
from train.run_files import CHECKPOINT_NAME, SUMMARY_NAME, run_preset
from train.teacher import policy_from_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPolicy:
    """A deployable policy loaded from a run.

    Attributes:
        module: observation dict -> float (B, A) deterministic action within the bounds; eval mode.
        spec: the spec the run recorded.
        checkpoint: the file it came from.
    """

    module: nn.Module
    spec: PolicySpec
    checkpoint: Path
    run_dir: Path

    @property
    def preset(self) -> str:
        """The task preset the policy was trained on, as ``get_preset`` takes it.

        The built-in name, or the run's own copy of the preset file (``preset.toml``).
        """
        return run_preset(self.run_dir, self.spec.provenance.task_preset)

    @property
    def mode(self) -> ObsMode:
        """The environment observation mode its spec describes."""
        return observation_mode(self.spec)


def load_run_policy(run_dir: Path) -> RunPolicy:
    """The policy in ``run_dir``: a teacher run (`agent-runtime train`) or a student run (`distill`).

    Raises:
        CheckpointError: the directory or its checkpoint is missing, unreadable, or does not build a policy.
        SpecMismatchError: the preset has changed since the run, naming each differing field.
    """
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise CheckpointError(
            f"run directory {run_dir} {what}: pass the --run-dir of an `agent-runtime train` or `distill` run"
        )
    student_path = run_dir / STUDENT_CHECKPOINT
    path = student_path if student_path.is_file() else run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} has no checkpoint ({run_dir / CHECKPOINT_NAME} is missing): is it a training run directory, "
            "and has the run written its first checkpoint?"
        )
    module: nn.Module
    try:
        if path == student_path:
            module, spec, _ = load_student(path)
        else:
            module, spec, _ = policy_from_checkpoint(path)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a readable file with foreign contents
        raise CheckpointError(f"{path} does not hold a usable policy ({type(exc).__name__}: {exc})") from exc
    check_spec_current(spec, path, run_preset(run_dir, spec.provenance.task_preset))
    if path != student_path and not (run_dir / SUMMARY_NAME).is_file():
        log.warning(
            "%s is an unfinished training run (no %s: still training, or stopped): using its latest checkpoint, "
            "%s", run_dir, SUMMARY_NAME, path,
        )  # fmt: skip
    return RunPolicy(module, spec, path, run_dir)


def check_spec_current(spec: PolicySpec, source: Path, preset: str) -> None:
    """Raise unless ``spec`` matches what its task preset produces today.

    The parity observations (and the robot's) come from the preset as it is now; a policy trained on
    other shapes, quantities, bounds or timing would be checked and served on inputs it never saw.

    Args:
        spec: the spec the checkpoint recorded.
        source: the checkpoint, for the message.
        preset: the preset to build today's spec from (``get_preset``'s argument: a name or the run's copy).

    Raises:
        SpecMismatchError: naming every differing field.
        ValueError: the preset no longer exists, or its file is not the task the policy was trained on.
    """
    task = get_preset(preset)
    if task.sha256 != spec.provenance.task_preset_sha256:
        raise ValueError(
            f"{source} was trained on a preset with hash {spec.provenance.task_preset_sha256 or '(built-in)'}, "
            f"but {preset} has hash {task.sha256 or '(built-in)'}: use the run's own preset.toml"
        )
    current = build_spec(task, observation_mode(spec))
    diffs = current.differences(spec, ours=f"preset {preset} now", theirs="checkpoint")
    if diffs:
        raise SpecMismatchError(
            diffs,
            context=f"{source} was trained on preset {preset} as it was then, and the preset has changed since; "
            "retrain, or export with the agent-runtime version that trained it",
        )
