"""Action chunks behind network delay (issue 18, part 7): a chunked student against a per-step one.

One run, side by side: a teacher (a training run), a per-step student (DAgger, `agent-runtime distill`)
and a chunked student (`distill --chunk H`), both distilled from it here unless given. Each student
is served by `agent_runtime` and drives the simulated robot (`train.sim_robot.SimRobot`) in the
fixed-rate loop at the task's control rate, through a link that holds every message for half the
injected delay in each direction (``--delay-periods`` control periods of round trip added to the
real one). The per-step student uses the client as the loop's action source; the chunked student
uses `agent_runtime.chunks.ChunkedActions` (queue by step, early requests, replace merge). Beside
them: each student without the delay, and the teacher in-process, on the same episode seeds.
Reported: episode returns, misses, and the loop's latency. Target: zero misses behind a delay of 3
periods for the chunked student, with a return near the teacher's.

Usage: python -m bench.chunked_control --teacher RUN [--chunk 10] [--delay-periods 3] [--episodes 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from agent_runtime.chunks import ChunkConfig, ChunkedActions
from agent_runtime.client import ClientConfig, PolicyClient
from agent_runtime.frames import recv_frames, send_frames
from agent_runtime.local_policy import LocalPolicy
from agent_runtime.loop import ActionSource, LoopConfig, run_loop
from agent_runtime.onnx_policy import OnnxPolicy
from agent_runtime.server import ServerConfig, serve_in_thread
from bench.machine import describe
from distill.config import DistillConfig
from distill.runner import run as distill
from train.sim_robot import SimRobot

log = logging.getLogger("bench.chunked_control")


class DelayLink:
    """A ROUTER in front of ``target`` that holds each message ``one_way_s`` in each direction.

    One DEALER per client towards the server, so the server sees each client as its own connection.
    """

    def __init__(self, target: str, one_way_s: float) -> None:
        self._target, self._delay = target, one_way_s
        self._context: zmq.Context[Any] = zmq.Context()
        self._front = self._context.socket(zmq.ROUTER)
        self._front.setsockopt(zmq.LINGER, 0)
        self._front.bind("tcp://127.0.0.1:*")
        self.endpoint = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-link", daemon=True)

    def __enter__(self) -> DelayLink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._context.destroy(linger=0)

    def _run(self) -> None:
        backs: dict[bytes, zmq.Socket[Any]] = {}
        clients: dict[zmq.Socket[Any], bytes] = {}
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        held: list[tuple[float, int, zmq.Socket[Any], list[bytes]]] = []  # (release time, order, socket, frames)
        order = itertools.count()
        while not self._stop.is_set():
            wait_ms = 10 if not held else max(0, min(10, int((held[0][0] - time.monotonic()) * 1e3)))
            for sock, _ in poller.poll(wait_ms):
                frames = recv_frames(sock)
                if sock is self._front:
                    client, body = frames[0], frames[1:]
                    if client not in backs:
                        back = self._context.socket(zmq.DEALER)
                        back.setsockopt(zmq.LINGER, 0)
                        back.connect(self._target)
                        poller.register(back, zmq.POLLIN)
                        backs[client], clients[back] = back, client
                    heapq.heappush(held, (time.monotonic() + self._delay, next(order), backs[client], body))
                else:
                    heapq.heappush(
                        held, (time.monotonic() + self._delay, next(order), self._front, [clients[sock], *frames])
                    )
            now = time.monotonic()
            while held and held[0][0] <= now:
                _, _, sock, frames = heapq.heappop(held)
                send_frames(sock, frames)


def drive(robot: SimRobot, source: ActionSource, rate_hz: float, episodes: int, max_steps: int) -> dict[str, Any]:
    """Run the loop until ``episodes`` episodes ended (or ``max_steps``); returns, misses, latency."""
    stats = run_loop(
        robot, source, LoopConfig(rate_hz=rate_hz, steps=max_steps), stop=lambda: len(robot.episode_returns) >= episodes
    )
    return {
        "returns": list(robot.episode_returns[:episodes]),
        "seeds": list(robot.episode_seeds[:episodes]),
        "steps": stats.steps,
        "misses": stats.misses,
        "miss_reasons": dict(stats.miss_reasons),
        "latency_ms": stats.latency.summary_ms(),
        "achieved_hz": stats.achieved_hz,
    }


def served(
    model: Path, preset: str, mode: str, delay_s: float, args: argparse.Namespace, chunked: bool
) -> dict[str, Any]:
    robot = SimRobot(preset, mode, seed=args.seed)
    rate = 1.0 / robot.spec.control_period_s
    config = ServerConfig(endpoint="tcp://127.0.0.1:*", log_every_s=0)
    with (
        serve_in_thread(OnnxPolicy(model), config) as server,
        DelayLink(server.endpoint, delay_s / 2) as link,
        PolicyClient(ClientConfig(endpoint=link.endpoint, connect_timeout_s=30), robot.spec) as client,
    ):
        client.connect()
        queue = ChunkConfig(merge=args.merge, replan_steps=args.replan_steps or None)
        source: ActionSource = ChunkedActions(client, queue) if chunked else client
        result = drive(robot, source, rate, args.episodes, args.max_steps)
        if isinstance(source, ChunkedActions):
            result["chunks"] = dataclasses.asdict(source.stats)
            result["planned_round_trip_ms"] = source.latency_s() * 1e3
    return result


def local(model: Path, preset: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    robot = SimRobot(preset, mode, seed=args.seed)
    return drive(
        robot, LocalPolicy(model, robot.spec), 1.0 / robot.spec.control_period_s, args.episodes, args.max_steps
    )


def student(args: argparse.Namespace, name: str, chunk: int) -> Path:
    """The student's ONNX file: distilled into ``--out/name`` unless it is already there."""
    noise = args.chunk_noise if chunk > 1 else 0.0
    hidden = tuple(args.hidden)
    run_dir = args.out / (f"{name}-noise{noise:g}-h{'x'.join(map(str, hidden))}" if chunk > 1 else name)
    model = run_dir / "policy.onnx"
    if not model.is_file():
        cfg = DistillConfig(
            teacher=args.teacher, run_dir=run_dir, student="mlp", chunk=chunk, chunk_noise=noise,
            iterations=args.iterations, steps_per_iteration=args.steps_per_iteration,
            updates_per_iteration=args.updates_per_iteration, eval_episodes=args.eval_episodes, video=False,
            threads=args.threads, baseline=False, hidden=hidden if chunk > 1 else DistillConfig.hidden,
        )  # fmt: skip
        distill(cfg)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher", type=Path, required=True, help="a training run (a state teacher suits an mlp student)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/chunked-control"))
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--delay-periods", type=float, default=3.0)
    parser.add_argument("--replan-steps", type=int, default=1, help="ChunkConfig.replan_steps; 0: only when needed")
    parser.add_argument("--merge", choices=["replace", "blend"], default="replace")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=5_000, help="most loop ticks per configuration")
    parser.add_argument("--seed", type=int, default=1_000, help="the first episode's seed (episode i: seed + i)")
    parser.add_argument("--chunk-noise", type=float, default=0.3, help="DART noise of the chunked student's data")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128], help="the chunked student's MLP")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--steps-per-iteration", type=int, default=2_000)
    parser.add_argument("--updates-per-iteration", type=int, default=1_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("agent_runtime.loop").setLevel(logging.ERROR)  # misses are counted, not logged per tick
    args.out.mkdir(parents=True, exist_ok=True)
    per_step, chunked = student(args, "student", 1), student(args, f"student-chunk{args.chunk}", args.chunk)
    spec = OnnxPolicy(per_step).spec
    preset, mode = spec.provenance.task_preset, "state" if "state" in spec.observation_names else "pixels"
    period = spec.control_period_s
    delay = args.delay_periods * period
    teacher = args.out / "student" / "teacher.onnx"  # the teacher as distill exported it
    rows: dict[str, dict[str, Any]] = {}
    teacher_mode = "state" if "state" in OnnxPolicy(teacher).spec.observation_names else "pixels"
    rows["teacher, in-process"] = local(teacher, preset, teacher_mode, args)
    for label, model, is_chunked in (
        ("per-step student", per_step, False),
        (f"chunked student (H={args.chunk})", chunked, True),
    ):
        rows[f"{label}, no added delay"] = served(model, preset, mode, 0.0, args, is_chunked)
        rows[f"{label}, +{args.delay_periods:g} periods ({delay * 1e3:.0f} ms)"] = served(
            model, preset, mode, delay, args, is_chunked
        )
    print(
        f"machine: {describe()}; task {preset} ({mode}), control period {period * 1e3:.0f} ms, "
        f"{args.episodes} episodes from seed {args.seed}"
    )
    print("| policy, link | episode returns | mean | ticks | misses | action latency p50 / p99 ms |")
    print("|---|---|---:|---:|---:|---|")
    for label, r in rows.items():
        lat = r["latency_ms"]
        rets = ", ".join(f"{x:.1f}" for x in r["returns"])
        print(
            f"| {label} | {rets} | {np.mean(r['returns']) if r['returns'] else float('nan'):.1f} | {r['steps']:,} | "
            f"{r['misses']:,} | {lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": describe(), "delay_s": delay, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
