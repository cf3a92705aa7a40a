"""Serving on every core (issue 18, part 5): `serve` and `serve --workers N` against the physical limit.

Side by side in one run, for a pixel and a state student (stand-ins of distill's defaults, as in
bench/serve_bench.py, or exported ones), with the server pinned to its own cores and the load
generator to the others, so the clients' CPU does not count against the server:
1. the limit: bare onnxruntime (one thread, pinned to one server core) on recorded observations at
   batch sizes 1 to 64; the best samples per second, times the number of server cores;
2. `agent-runtime serve` (one process), and `serve --workers N` for each N asked (a broker and N
   worker processes), all pinned to the server cores, flooded for --seconds by a load generator that
   keeps --window requests in flight on each of --sockets connections (pre-encoded act messages, so
   its own cost per request is a send and a receive). Acts answered per second, and the share of the
   limit: acts / (limit per core x server cores). Target: >= 80%.

Usage: python -m bench.serve_cores [--server-cpus 0] [--load-cpus 1] [--workers 1 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import zmq

from agent_runtime import protocol
from agent_runtime.frames import recv_frames, send_frames
from agent_runtime.protocol import Message
from bench.machine import describe
from bench.serve_bench import Student, prepare, serving

TARGET = 0.8
BATCHES = (1, 2, 4, 8, 16, 32, 64)


def bare_limit(student: Student, cpu: int, seconds: float) -> dict[int, float]:
    """Samples per second of bare onnxruntime (1 thread, pinned to ``cpu``) at each batch size."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(student.model), options, providers=["CPUExecutionProvider"])
        names = student.spec.observation_names
        rates = {}
        for batch in BATCHES:
            picks = [student.observations[i % len(student.observations)] for i in range(batch)]
            feed = {n: np.stack([o[n] for o in picks]) for n in names}
            session.run(None, feed)
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                session.run(None, feed)
                calls += 1
            rates[batch] = calls * batch / elapsed
        return rates
    finally:
        os.sched_setaffinity(0, before)


def act_frames(student: Student, count: int) -> list[list[Any]]:
    """Pre-encoded act requests over the recorded observations. Their ``t`` is constant, so the server
    never thinks them queued, and their deadline is long: every request is served, none refused."""
    out = []
    for i in range(count):
        obs = student.observations[i % len(student.observations)]
        message = Message(protocol.ACT, i, 0.0, obs, {"deadline_ms": 60_000.0})
        out.append([bytes(f) if isinstance(f, memoryview) else f for f in protocol.encode(message)])
    return out


def flood(endpoint: str, frames: list[list[Any]], sockets: int, window: int, seconds: float) -> dict[str, Any]:
    """Keep ``window`` requests in flight on each of ``sockets`` DEALERs; count replies for ``seconds``."""
    context: zmq.Context[Any] = zmq.Context()
    socks = []
    poller = zmq.Poller()
    for _ in range(sockets):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        poller.register(sock, zmq.POLLIN)
        socks.append(sock)
    kinds: Counter[str] = Counter()
    k = 0
    try:
        for sock in socks:
            for _ in range(window):
                send_frames(sock, frames[k % len(frames)])
                k += 1
        warm_until = time.monotonic() + min(2.0, seconds / 4)
        start = end = None
        while True:
            now = time.monotonic()
            if start is None and now >= warm_until:
                start, end = now, now + seconds
                kinds.clear()
            if end is not None and now >= end:
                break
            for sock, _ in poller.poll(1000):
                while True:
                    try:
                        reply = recv_frames(sock, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    kinds[protocol.peek(reply[0]).type or "unreadable"] += 1
                    send_frames(sock, frames[k % len(frames)])
                    k += 1
        return {"acts": kinds["act"], "seconds": seconds, "replies": dict(kinds)}
    finally:
        for sock in socks:
            sock.close(linger=0)
        context.term()


def run_config(
    student: Student, workers: int, args: argparse.Namespace, frames: list[list[Any]], tmp: Path
) -> dict[str, Any]:
    with serving(student, args.max_batch, 1, tmp / "server.log", workers=workers, cpus=set(args.server_cpus)) as ep:
        return flood(ep, frames, args.sockets, args.window, args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cpus = sorted(os.sched_getaffinity(0))
    half = max(1, len(cpus) // 2)
    parser.add_argument("--server-cpus", type=int, nargs="+", default=cpus[:half])
    parser.add_argument("--load-cpus", type=int, nargs="+", default=cpus[half:] or cpus)
    parser.add_argument(
        "--workers", type=int, nargs="+", help="counts for serve --workers (default: 1, and one per server core)"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--limit-seconds", type=float, default=2.0, help="timing per batch size for the limit")
    parser.add_argument("--sockets", type=int, default=16)
    parser.add_argument("--window", type=int, default=4, help="requests in flight per socket")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--preset", default="inverted_pendulum")
    parser.add_argument("--record-steps", type=int, default=256)
    parser.add_argument("--pixel-model", type=Path)
    parser.add_argument("--state-model", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workers = args.workers or sorted({1, len(args.server_cpus)})
    os.sched_setaffinity(0, set(args.load_cpus))  # this process is the load generator
    n = len(args.server_cpus)
    print(f"machine: {describe()}; server cores {args.server_cpus}, load generator cores {args.load_cpus}")
    print(
        f"load: {args.sockets} connections x {args.window} requests in flight, {args.seconds:g} s per cell; "
        f"server max_batch {args.max_batch}"
    )
    report: dict[str, Any] = {"machine": platform.machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for student in prepare(args, tmp):
            rates = bare_limit(student, args.server_cpus[0], args.limit_seconds)
            best = max(rates, key=lambda b: rates[b])
            limit = rates[best] * n
            frames = act_frames(student, 256)
            cells = {"serve": run_config(student, 0, args, frames, tmp)}
            for w in workers:
                cells[f"serve --workers {w}"] = run_config(student, w, args, frames, tmp)
            report[student.label] = {"limit_by_batch": rates, "best_batch": best, "limit": limit, "cells": cells}
            print(
                f"\n{student.label} student: bare onnxruntime per core "
                + ", ".join(f"b{b} {r:,.0f}/s" for b, r in rates.items())
            )
            for name, cell in cells.items():
                rate = cell["acts"] / cell["seconds"]
                other = {k: v for k, v in cell["replies"].items() if k != "act"}
                rows.append((student.label, name, rate, limit, rate / limit, other))
    cores = f"{n} core{'s' * (n > 1)}"
    print(f"\n| student | server ({cores}) | acts/s | limit (best batch x cores) | share | other replies | target |")
    print("|---|---|---:|---:|---:|---|---|")
    for label, name, rate, limit, share, other in rows:
        verdict = "met" if share >= TARGET else "**missed**"
        print(
            f"| {label} | `{name}` | {rate:,.0f} | {limit:,.0f} | {share:.0%} | {other or 'none'} | >= 80%: {verdict} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
