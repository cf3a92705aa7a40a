"""``agent-runtime evaluate``: any exported policy (teacher or student) on held-out episodes, scored as a report card.

The policy runs in-process in onnxruntime (``agent_runtime.onnx_policy``, the file the server would
load), one episode per seed, in the task preset its spec names (or ``--preset``, checked against the
spec). The result is the report card's statistics (``train.scores``): mean and IQM with bootstrap
intervals, the failure rate with its Wilson interval under the task's criterion (or
``--failure-below``), and the worst episodes by seed; each can be replayed with ``--seeds`` or
recorded as an mp4 with ``--worst-videos``.

Importing this module needs none of the training extra: the work is imported when the command runs.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_runtime.files import write_text_atomically

log = logging.getLogger(__name__)

RESULT_NAME = "evaluation.json"


@dataclass(frozen=True)
class EvaluateCommand:
    """Evaluate an exported policy (ONNX) on held-out episodes: mean, IQM and failure rate with 95% intervals."""

    policy: Path
    """The policy file (`policy.onnx` or `teacher.onnx` of a distill run, or `agent-runtime export`'s output)."""
    preset: str | None = None
    """Task preset to run it in; default the one its spec was trained on. The preset must give exactly
    the observations and actions the spec describes."""
    episodes: int = 100
    """Episodes to run, on the held-out seeds of --seed (the seeds the report card uses)."""
    seed: int = 0
    """Run seed whose held-out evaluation seeds are used (a distill run's --seed gives its card's episodes)."""
    seeds: tuple[int, ...] = ()
    """Run exactly these episode seeds instead (e.g. a report's worst episodes, to replay them)."""
    seconds: float | None = None
    """Start no episode after this many seconds (the first always runs); the result says how many ran."""
    failure_below: float | None = None
    """An episode whose return is below this fails, beside the task's own criterion (inverted_pendulum,
    walker2d: the episode terminated, it fell)."""
    worst_videos: int = 0
    """Replay the this-many worst episodes and write each as an mp4 in --out."""
    video_size: int = 256
    """Side of the video frames in pixels."""
    out: Path = Path("runs/evaluation")
    """Where evaluation.json (every episode's seed, return and length, and the statistics) and the videos go."""
    threads: int = 1
    """onnxruntime threads."""

    def __post_init__(self) -> None:
        if self.episodes < 1 and not self.seeds:
            raise ValueError(f"episodes is {self.episodes}; evaluate at least one episode")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative; got {[s for s in self.seeds if s < 0]}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"seconds is {self.seconds}; it must be positive (or left out: no budget)")
        if self.failure_below is not None and not math.isfinite(self.failure_below):
            raise ValueError(f"failure_below is {self.failure_below}; give a finite return (or leave it out)")
        for name in ("worst_videos",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}; it must not be negative")
        for name in ("video_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}; it must be at least 1")


class OnnxEpisodePolicy:
    """An exported policy as an evaluation policy: batch of one through onnxruntime."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.names = policy.spec.observation_names

    def reset(self) -> None:
        """Nothing to clear: the environment stacks the frame history, as the robot does."""

    def __call__(self, observation: dict[str, Any]) -> Any:
        """The action for one observation."""
        answer = self.policy.infer({name: observation[name][None] for name in self.names})[0]
        return answer[0] if answer.ndim == 2 else answer  # a chunk's first action: re-planned every step


def run_evaluate(cmd: EvaluateCommand) -> dict[str, Any]:
    """Evaluate ``cmd.policy`` as the command says; returns (and writes) the result."""
    from agent_runtime.onnx_policy import OnnxPolicy
    from agent_runtime.spec import SpecMismatchError
    from train.envs import build_spec, observation_mode
    from train.evaluate import eval_seeds, evaluate
    from train.failure import preset_rule
    from train.preset_file import check_same_task
    from train.presets import get_preset
    from train.run_files import PRESET_COPY_NAME
    from train.scores import score

    policy = OnnxPolicy(cmd.policy, cmd.threads)
    spec = policy.spec
    trained_on, trained_sha256 = spec.provenance.task_preset, spec.provenance.task_preset_sha256
    if cmd.preset is None and trained_sha256 is not None:
        raise ValueError(
            f"{cmd.policy} was trained on the preset file {trained_on!r}; pass it as --preset PATH.toml (the "
            f"training run keeps a copy as {PRESET_COPY_NAME})"
        )
    name = cmd.preset or trained_on
    if not name:
        raise ValueError(f"{cmd.policy}'s spec names no task preset; pass --preset")
    task = get_preset(name)
    check_same_task(task, trained_sha256, trained_on, str(cmd.policy))
    mode = observation_mode(spec)
    differences = build_spec(task, mode).differences(spec, ours=f"preset {name}", theirs=str(cmd.policy))
    if differences:
        raise SpecMismatchError(differences, context=f"{cmd.policy} does not act in preset {name} as it is now")
    seeds = list(cmd.seeds) if cmd.seeds else eval_seeds(cmd.seed, cmd.episodes)
    log.info("evaluating %s on %s (%s): %d episode(s)", cmd.policy, name, mode, len(seeds))
    actor = OnnxEpisodePolicy(policy)
    result = evaluate(actor, task, mode, seeds, budget_s=cmd.seconds)
    rule = preset_rule(task, cmd.failure_below)
    scored = score(result, rule, seed=cmd.seed, worst=max(cmd.worst_videos, 5))
    videos: list[dict[str, Any]] = []
    if cmd.worst_videos:
        worst = scored.worst[: cmd.worst_videos]
        paths = {e.seed: cmd.out / f"worst{rank + 1}_seed{e.seed}.mp4" for rank, e in enumerate(worst)}
        replay = evaluate(actor, task, mode, list(paths), videos=paths, video_size=cmd.video_size)
        for episode, replayed in zip(worst, replay.returns, strict=True):
            videos.append({"seed": episode.seed, "return": episode.ret, "replayed_return": replayed,
                           "path": str(paths[episode.seed])})  # fmt: skip
            if replayed != episode.ret:
                log.warning("seed %d replayed to %.3f, not %.3f: the policy or env is not deterministic",
                            episode.seed, replayed, episode.ret)  # fmt: skip
    report = {
        "policy": str(cmd.policy),
        "policy_name": spec.provenance.policy,
        "weights_sha256": spec.provenance.model_sha256,
        "preset": name,
        "mode": mode,
        "failure_criterion": rule.describe(),
        "episodes": [
            {"seed": s, "return": r, "length": n, "terminated": t}
            for s, r, n, t in zip(result.seeds, result.returns, result.lengths, result.terminated, strict=True)
        ],
        "score": scored.to_dict(),
        "videos": videos,
    }
    cmd.out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(cmd.out / RESULT_NAME, json.dumps(report, indent=2))
    return report


def result_text(report: dict[str, Any]) -> str:
    """The result as a Markdown table."""
    from train.score_text import failure_text, returns_text, worst_text

    score = report["score"]
    ran = f"{score['stats']['episodes']} of {score['requested']} episodes in {score['seconds']:.0f} s"
    rows = [
        ("policy", f"{report['policy']} ({report['policy_name']})"),
        ("task", f"{report['preset']} ({report['mode']}); {ran}"),
        ("return", returns_text(score["stats"])),
        ("failure criterion", report["failure_criterion"] or "none (pass --failure-below)"),
        ("failures", failure_text(score["stats"])),
        ("worst episodes (seed: return)", worst_text(score, 5)),
    ]
    rows += [(f"video, seed {v['seed']}", v["path"]) for v in report["videos"]]
    lines = ["| evaluation | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines)
