"""The training loop: a collector and a learner, and the schedule between them. It computes no loss itself."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agent_runtime.files import write_text_atomically
from train.acting import ActingPolicy, EpisodePolicyOf
from train.allocator import keep_freed_memory
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.collector import Collector, LocalCollector, ThreadCollector, Transitions
from train.config import TrainConfig
from train.device import resolve_device
from train.encoding import encode_function
from train.envs import build_spec
from train.evaluate import EvalResult, eval_seeds, evaluate
from train.failure import preset_rule
from train.frames import frame_dtype
from train.learner import Learner
from train.metrics import TensorBoardWriter
from train.preset_file import save_preset_copy
from train.presets import get_preset
from train.ray_actors import import_ray
from train.ray_collectors import RayCollectors
from train.replay import Batch, grow_replay, recover_replay, stored_capacity
from train.run_files import CHECKPOINT_NAME, EVALS_NAME, PRESET_COPY_NAME, SUMMARY_NAME, run_preset
from train.score_text import failure_text, returns_text
from train.scores import score
from train.teacher import build_encoder, config_from_dict, config_to_dict, history

log = logging.getLogger(__name__)

PROGRESS_LOG_S = 30.0
"""Seconds between progress log lines when there is no terminal for the progress bar."""


def _prepare(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config to run (its steps set) and, on --resume, the checkpoint to continue from.

    A new run must not overwrite one; a resumed run keeps its saved config, and a --steps given sets a
    new target (never below the step the run reached).
    """
    path = cfg.run_dir / CHECKPOINT_NAME
    if not cfg.resume:
        if path.exists():
            raise ValueError(
                f"{cfg.run_dir} already holds a run; pass --resume to continue it, or choose another --run-dir"
            )
        return dataclasses.replace(cfg, steps=cfg.target_steps), None
    if not path.exists():
        raise CheckpointError(
            f"--resume: {cfg.run_dir} has no checkpoint ({path} is missing); start it without --resume "
            "(a run killed before its first checkpoint starts again from zero)"
        )
    payload = load_checkpoint(path)
    saved = config_from_dict(TrainConfig, _with_legacy_defaults(payload["config"]))
    reached = int(payload["progress"]["step"])
    target = saved.target_steps if cfg.steps is None else cfg.steps
    if target < reached:
        raise ValueError(
            f"--resume: {cfg.run_dir} is at step {reached:,} already; --steps {target:,} is below it "
            "(leave --steps out to finish the run's own target, or give a larger one)"
        )
    if reached >= target and (cfg.run_dir / SUMMARY_NAME).exists():
        raise ValueError(
            f"--resume: {cfg.run_dir} finished its {target:,} steps; give a larger --steps to train it further"
        )
    if target != saved.target_steps:
        change = "extending" if target > saved.target_steps else "shortening"
        log.warning("--resume: %s %s from %d to %d steps (--steps)", change, cfg.run_dir, saved.target_steps, target)
    # The device is this machine's, not the saved one: a run trained on a GPU resumes on a CPU. So is
    # the Ray cluster's address (a cluster started again moves). The collectors are the saved ones:
    # the replay has a lane for each of their environments.
    if (cfg.collectors, cfg.max_policy_lag) != (saved.collectors, saved.max_policy_lag):
        log.warning(
            "--resume: %s keeps its %d collector(s) and max_policy_lag %d (its replay has a lane per environment)",
            cfg.run_dir, saved.collectors, saved.max_policy_lag,
        )  # fmt: skip
    # A task from a preset file resumes from the run's own copy of it, as distill and export read it:
    # the file may have been edited, moved or deleted since, or named relative to another directory.
    preset = run_preset(cfg.run_dir, saved.preset)
    resumed = dataclasses.replace(
        saved,
        steps=target,
        resume=True,
        run_dir=cfg.run_dir,
        device=cfg.device,
        ray_address=cfg.ray_address,
        preset=preset,
    )
    _warn_of_ignored_settings(cfg, saved)
    return resumed, payload


_TAKEN_ON_RESUME = ("steps", "resume", "run_dir", "device", "ray_address", "collectors", "max_policy_lag", "preset")
"""Fields a resume takes from the command line, or warns of on their own."""


def _warn_of_ignored_settings(cfg: TrainConfig, saved: TrainConfig) -> None:
    """Log the settings of this command line that differ from the run's saved ones: a resume keeps the saved."""
    given, kept = config_to_dict(cfg), config_to_dict(saved)
    differ = [
        f"{name} {_flat(given[name])} (keeps {_flat(kept[name])})"
        for name in given
        if name not in _TAKEN_ON_RESUME and name in kept and given[name] != kept[name]
    ]
    if differ:
        log.warning(
            "--resume: %s keeps its saved settings; this command's differ and are not used: %s",
            cfg.run_dir, "; ".join(differ),
        )  # fmt: skip
    if cfg.preset != saved.preset and cfg.preset != str(cfg.run_dir / PRESET_COPY_NAME):
        log.warning("--resume: %s keeps its task %s; --preset %s is not used", cfg.run_dir, saved.preset, cfg.preset)


def _flat(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)


LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"sac": {"feature_shift": 0}}
"""Settings a saved config lacks because it predates them, and the value its run trained with.
A default changed later (the feature shift became 1 on 2026-12-01) must not change a resumed run."""


def _with_legacy_defaults(config: dict[str, Any]) -> dict[str, Any]:
    filled = dict(config)
    for section, defaults in LEGACY_DEFAULTS.items():
        filled[section] = {**defaults, **config.get(section, {})}
    return filled


class TrainingStopped(Exception):
    """Training stopped when asked (Ctrl-C), after saving a checkpoint at :attr:`step` to resume from."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped at step {step} with a checkpoint saved")
        self.step = step


def run(cfg: TrainConfig, stop: threading.Event | None = None) -> dict[str, Any]:
    """Train a teacher as ``cfg`` says; returns (and saves as ``summary.json``) the run summary.

    The loop connects a collector (environments, rendering, the frozen encoder) and a learner (the
    replay and SAC, on ``cfg.device``) and owns the schedule: how many updates follow each step,
    when the collector gets new weights, evaluations, checkpoints and progress.

    Args:
        cfg: the run.
        stop: when set, the run saves a checkpoint at the end of the current step and raises
            :class:`TrainingStopped`; ``--resume`` goes on from there.
    """
    cfg, payload = _prepare(cfg)
    device = resolve_device(cfg.device)
    if cfg.collectors > 0:
        import_ray()  # before anything is written: without Ray, one line naming the extra
    keep_freed_memory()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    preset = get_preset(cfg.preset)
    save_preset_copy(preset, cfg.run_dir)  # a preset file travels with the run (refused if it changed)
    mode = cfg.observation_mode
    spec = build_spec(preset, mode)
    encoder = build_encoder(cfg)
    if encoder is not None:
        tuned = "+finetuned" if cfg.finetune_last_stage else ""
        tuned += "+bn-statistics" if cfg.update_bn_statistics else ""
        spec = spec.with_provenance(encoder=cfg.encoder.describe() + tuned, policy=f"sac-{cfg.representation}")
    else:
        spec = spec.with_provenance(policy=f"sac-{cfg.representation}")
    encode = encode_function(cfg, encoder, spec, device, cfg.run_dir)
    learner = Learner(
        cfg,
        spec,
        encoder,
        frame_dtype(cfg.representation),
        _replay_capacity(cfg, history(cfg, spec), payload, cfg.run_dir / "replay"),
        cfg.run_dir / "replay",
        resume=payload is not None,
        device=device,
    )
    state: dict[str, Any] = {"step": 0, "episodes": 0, "evals": []}
    if payload is not None:
        learner.load_state(payload)
        torch.set_rng_state(payload["rng"]["torch"])
        state.update({k: payload["progress"][k] for k in ("step", "episodes")})
        state["evals"] = [list(e) for e in payload["evals"]]
        log.info("resumed %s at step %d", cfg.run_dir, state["step"])
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(cfg.run_dir / "config.json", config_to_dict(cfg))
    write_text_atomically(cfg.run_dir / "spec.json", spec.to_json(indent=2))
    writer = TensorBoardWriter(cfg.run_dir / "tb")
    collector: Collector
    ahead_collector: ThreadCollector | RayCollectors | None = None  # one that collects while updates run
    if cfg.collectors > 0:  # on Ray actors, each with its own environments and encoder
        collector = ahead_collector = RayCollectors(cfg, spec, encoder, seed=cfg.seed)
    elif cfg.collect_ahead:  # every call on one thread of its own, where its GL contexts are current
        collector = ahead_collector = ThreadCollector(lambda: LocalCollector(cfg, spec, encoder, encode, seed=cfg.seed))
    else:
        collector = LocalCollector(cfg, spec, encoder, encode, seed=cfg.seed)
    try:
        if payload is not None and "collector" in payload:
            collector.load_state(payload["collector"])
        elif payload is not None:  # saved before the collector had its own random state
            collector.reseed(cfg.seed + state["step"])
        evaluation_policy = ActingPolicy(cfg, spec, encoder)
    except BaseException:  # the loop's own try has not begun: close what was started (processes, Ray)
        collector.close()
        writer.close()
        raise

    def save() -> None:
        learner.replay.flush()
        payload = {
            "config": config_to_dict(cfg),
            "spec": spec.to_dict(),
            "encoder": encoder.state_dict() if encoder is not None else None,
            **learner.state(),
            "collector": collector.state(),
            "progress": {"step": state["step"], "updates": learner.updates, "episodes": state["episodes"]},
            "evals": state["evals"],
        }
        payload["rng"]["torch"] = torch.get_rng_state()
        save_checkpoint(cfg.run_dir / CHECKPOINT_NAME, payload)

    eval_time = [0.0]
    start_step, start_time = state["step"], time.perf_counter()

    def run_eval(video: Path | None, episodes: int, budget_s: float | None = None, final: bool = False) -> EvalResult:
        began = time.perf_counter()
        evaluation_policy.load(learner.weights())
        policy = EpisodePolicyOf(evaluation_policy, cfg, spec, encode)
        seeds = eval_seeds(cfg.seed, episodes)
        asked = stop.is_set if stop is not None else None
        result = evaluate(policy, preset, mode, seeds, video, cfg.video_size, budget_s=budget_s, stop=asked)
        if len(result.returns) < len(seeds) and asked is not None and asked():  # cut short: not recorded,
            bar.close()  # and --resume runs it first
            if not final:  # (the final one comes after a checkpoint at the last step)
                save()
            log.info("stopped during the evaluation at step %d; checkpoint saved, --resume runs it", state["step"])
            raise TrainingStopped(state["step"])
        # The curve keeps the periodic evaluations' few episodes, also at the end, so it stays comparable.
        periodic = result.returns[: cfg.eval_episodes]
        mean, std = float(np.mean(periodic)), float(np.std(periodic))
        if state["evals"] and state["evals"][-1][0] == state["step"]:  # evaluated again at a step (killed after
            state["evals"].pop()  # the checkpoint at the end, before the summary): one point per step
        state["evals"].append([state["step"], mean, std])
        # The curve so far, readable while the run goes on (summary.json comes only at the end).
        _write_json(cfg.run_dir / EVALS_NAME, {"evals": state["evals"]})
        writer.scalars(state["step"], {"eval/return_mean": mean, "eval/return_std": std})
        eval_time[0] += time.perf_counter() - began
        rate = (state["step"] - start_step) / max(time.perf_counter() - start_time, 1e-9)
        log.info("step %d: evaluation return %.1f +- %.1f (%.0f steps/s)", state["step"], mean, std, rate)
        return result

    update_time = 0.0
    try:
        # A resumed run starts new episodes: the simulator state at the kill is not saved.
        learner.store(collector.start(seed=cfg.seed + state["step"]))
        collector.load_policy(learner.weights())
        owed_updates, next_eval = 0.0, _next_multiple(state["step"], cfg.eval_every)
        next_checkpoint = _next_multiple(state["step"], cfg.checkpoint_every)
        bar = tqdm(
            total=cfg.target_steps, initial=state["step"], unit="step", desc=cfg.preset, mininterval=1.0, disable=None
        )
        last_eval = state["evals"][-1][1] if state["evals"] else float("nan")
        # An evaluation due at the saved step that is not on the curve (the run stopped before or during
        # it) runs first, at that step, so a stopped and resumed run's curve has every point.
        owed_eval = _next_multiple(int(state["evals"][-1][0]) if state["evals"] else 0, cfg.eval_every)
        if owed_eval <= state["step"] < cfg.target_steps:
            log.info("step %d: the evaluation the run stopped before runs first", state["step"])
            last_eval = run_eval(None, cfg.eval_episodes).mean
        # Without a terminal the bar is off (a log file would fill with carriage returns): a log line
        # every PROGRESS_LOG_S tells how far the run is instead.
        next_progress_log, progress_from = time.perf_counter() + PROGRESS_LOG_S, (state["step"], time.perf_counter())
        losses: list[dict[str, float]] = []
        # (step, time, evaluation time so far) when updates began in this process
        learn_start: tuple[int, float, float] | None = None
        # --collect-ahead: the next step, collected (and stored, and its batches drawn) while this
        # step's updates ran.
        ahead: Future[tuple[Transitions, list[Batch]]] | None = None

        def store_and_draw(count: int, ahead_step: Transitions) -> tuple[Transitions, list[Batch]]:
            learner.store(ahead_step)
            return ahead_step, [learner.sample() for _ in range(count)]

        def round_steps(due: int) -> int:
            """Steps per environment for the next collection: a round, but never past ``due``."""
            return max(1, min(cfg.round_steps, -(-(due - state["step"]) // cfg.lanes)))

        lags: list[int] = []  # updates the policy was behind at the end of each round collected ahead

        while state["step"] < cfg.target_steps:
            drawn: list[Batch] | None = None
            if ahead is not None:
                transitions, drawn = ahead.result()
                ahead = None
            else:
                due = min(cfg.target_steps, next_eval, next_checkpoint)
                if state["step"] < cfg.learning_starts:  # a random round ends where learning starts
                    due = min(due, cfg.learning_starts)
                transitions = collector.collect(round_steps(due), random_actions=state["step"] < cfg.learning_starts)
                learner.store(transitions)
            for episode_return in transitions.episode_returns:
                writer.scalars(state["step"], {"train/episode_return": episode_return})
            state["episodes"] += len(transitions.episode_returns)
            state["step"] += transitions.steps
            bar.update(transitions.steps)
            if bar.disable and time.perf_counter() >= next_progress_log:
                rate = (state["step"] - progress_from[0]) / (time.perf_counter() - progress_from[1])
                evaluated = "none yet" if np.isnan(last_eval) else f"{last_eval:.1f}"
                log.info(
                    "step %d of %d (%.0f%%), %.1f steps/s, last evaluation return %s",
                    state["step"], cfg.target_steps, 100 * state["step"] / cfg.target_steps, rate, evaluated,
                )  # fmt: skip
                progress_from = (state["step"], time.perf_counter())
                next_progress_log = progress_from[1] + PROGRESS_LOG_S

            if state["step"] >= cfg.learning_starts:
                if learn_start is None:
                    learn_start = (state["step"], time.perf_counter(), eval_time[0])
                # Updates are owed for the steps from the last random one on (a round may straddle it).
                first_owed = max(state["step"] - transitions.steps, cfg.learning_starts - 1)
                owed_updates += (state["step"] - first_owed) * cfg.updates_per_step
                t2 = time.perf_counter()
                if owed_updates >= 1.0:
                    count = int(owed_updates)
                    owed_updates -= count
                    batches = drawn if drawn is not None else [learner.sample() for _ in range(count)]
                    if len(batches) != count:
                        raise RuntimeError(f"{len(batches)} batches were drawn ahead for {count} updates")
                    # Collecting ahead: the collector's thread takes the next step while these updates
                    # run here, acting with the weights from before them; then it stores the step and
                    # draws the next step's batches. Those are the batches drawn without collecting
                    # ahead (the same replay, the learner's own random stream, nothing else reads
                    # either meanwhile). Never ahead of a stop, an evaluation or a checkpoint: they see
                    # the steps counted and no more.
                    stopping = stop is not None and stop.is_set()
                    due = min(cfg.target_steps, next_eval, next_checkpoint)
                    if ahead_collector is not None and state["step"] < due and not stopping:
                        steps_ahead = round_steps(due)
                        next_count = int(owed_updates + steps_ahead * cfg.lanes * cfg.updates_per_step)
                        then = functools.partial(store_and_draw, next_count)
                        ahead = ahead_collector.collect_later(steps_ahead, random_actions=False, then=then)
                        lags.append(len(batches))  # the updates below, which the round's policy lacks
                    for batch in batches:
                        losses.append(learner.update(batch))
                    if ahead is not None:
                        ahead.exception()  # wait for it: weights change only between the collector's steps
                    # The collector acts with the newest weights from its next step on.
                    collector.load_policy(learner.weights())
                update_time += time.perf_counter() - t2

            if stop is not None and stop.is_set() and ahead is None and state["step"] < cfg.target_steps:
                bar.close()
                save()
                log.info("stopped at step %d; checkpoint saved to %s", state["step"], cfg.run_dir / CHECKPOINT_NAME)
                raise TrainingStopped(state["step"])
            if state["step"] >= next_eval and state["step"] < cfg.target_steps:
                last_eval = run_eval(None, cfg.eval_episodes).mean
                next_eval = _next_multiple(state["step"], cfg.eval_every)
            if state["step"] % 1000 < cfg.lanes * cfg.round_steps:
                elapsed = time.perf_counter() - start_time
                perf = {
                    "perf/steps_per_s": (state["step"] - start_step) / elapsed,
                    **{f"perf/{name}_s": value for name, value in {**collector.time_s, "update": update_time}.items()},
                }
                if lags:
                    perf["perf/policy_lag"] = float(np.mean(lags[-100:]))
                if losses:
                    perf.update({k: float(np.mean([m[k] for m in losses])) for k in losses[0]})
                    losses.clear()
                writer.scalars(state["step"], perf)
                bar.set_postfix(sps=f"{perf['perf/steps_per_s']:.0f}", eval=f"{last_eval:.1f}")
            if state["step"] >= next_checkpoint:
                save()
                next_checkpoint = _next_multiple(state["step"], cfg.checkpoint_every)
        bar.close()
        elapsed = time.perf_counter() - start_time
        learning_rate = None
        if learn_start is not None and state["step"] > learn_start[0]:
            # Environment steps per second while learning (one step, its encoding and its updates),
            # without the random warm-up and without evaluations.
            evaluating = eval_time[0] - learn_start[2]  # the evaluations since updates began
            learning_rate = (state["step"] - learn_start[0]) / (time.perf_counter() - learn_start[1] - evaluating)
        video_path = cfg.run_dir / "eval.mp4" if cfg.video else None
        log.info(
            "final evaluation: %d episodes on held-out seeds (at most %.0f s)", cfg.final_eval_episodes,
            cfg.final_eval_seconds,
        )  # fmt: skip
        save()  # every step is kept before the final evaluation, which a stop (Ctrl-C) cuts short
        final_eval = run_eval(
            video_path, max(cfg.final_eval_episodes, cfg.eval_episodes), cfg.final_eval_seconds, final=True
        )
        final_score = score(final_eval, preset_rule(preset, cfg.failure_below), seed=cfg.seed)
        log.info(
            "final evaluation: %s; failures %s", returns_text(final_score.stats.to_dict()),
            failure_text(final_score.stats.to_dict()),
        )  # fmt: skip
        save()
    finally:
        collector.close()
        writer.close()
    summary = {
        "preset": cfg.preset,
        "representation": cfg.representation,
        "encoder": spec.provenance.encoder,
        "device": str(device),
        "steps": state["step"],
        "resumed_at_step": start_step,  # 0 for a run that started fresh; wall time and rates cover this run only
        "frames": state["step"] * preset.action_repeat,
        "updates": learner.updates,
        "episodes": state["episodes"],
        "wall_time_s": round(elapsed, 1),
        "steps_per_s": round((state["step"] - start_step) / max(elapsed, 1e-9), 1),
        "learning_steps_per_s": round(learning_rate, 1) if learning_rate is not None else None,
        "time_s": {name: round(value, 1) for name, value in {**collector.time_s, "update": update_time}.items()},
        # Where collection ran, and how far behind the learner the policy it acted with was (in updates,
        # at the end of each round collected while updates ran; 0 where collection waits for them).
        "collection": {
            "collectors": cfg.collectors,
            "lanes": cfg.lanes,
            "round_steps": cfg.round_steps,
            "restarts": collector.restarts if isinstance(collector, RayCollectors) else 0,
            "policy_lag": {"max": max(lags, default=0), "mean": round(float(np.mean(lags)), 2) if lags else 0.0},
            "max_policy_lag": cfg.max_policy_lag if cfg.collectors > 0 else None,
        },
        # The report card's statistics (train.scores), with every episode's seed and return kept.
        "final_eval": {
            "mean": final_eval.mean,
            "std": final_eval.std,
            "seeds": list(final_eval.seeds),
            "returns": list(final_eval.returns),
            "terminated": list(final_eval.terminated),
            **final_score.to_dict(),
        },
        "evals": state["evals"],
        "checkpoint": str(cfg.run_dir / CHECKPOINT_NAME),
        "video": str(video_path) if video_path else None,
        "tensorboard": str(cfg.run_dir / "tb"),
    }
    _write_json(cfg.run_dir / SUMMARY_NAME, summary)
    return summary


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    write_text_atomically(path, json.dumps(data, indent=2))


def _replay_capacity(cfg: TrainConfig, frames_per_obs: int, payload: dict[str, Any] | None, replay_dir: Path) -> int:
    """Replay slots per lane, for the run's steps (``--replay-capacity`` at most).

    A step takes one slot, and an episode's end one more (its final observation beside the next
    episode's first), so twice the steps always fits.

    A resumed run trained further (a larger ``--steps``) grows its replay files to fit, so it keeps
    every transition it collected, as a run trained that long from the start would: each stored slot
    moves to its place in the larger ring (:func:`train.replay.grow_replay`). A replay is never
    shrunk, and one capped by ``--replay-capacity`` stays capped.
    """
    needed = max(min(cfg.replay_capacity, 2 * cfg.target_steps) // cfg.lanes + 2, frames_per_obs + 2)
    if payload is None:
        return needed
    recover_replay(replay_dir)  # a growth a kill interrupted is finished or undone first
    stored = stored_capacity(replay_dir) or int(payload.get("replay_capacity_per_lane", needed))
    if needed > stored:
        log.info("growing %s from %d to %d slots per lane for %d steps", replay_dir, stored, needed, cfg.target_steps)
        grow_replay(replay_dir, needed)
    return max(needed, stored)


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every
