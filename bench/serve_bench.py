"""Serving benchmark (issue 5): the runtime against its floors, robot fleets, batching, and a fuzz run.

Side by side in one run, for a pixel student and a state student of one preset (exported students
with --pixel-model/--state-model, else stand-ins of the same architecture: bench/serve_students.py):
1. floors and round trip: a bare pyzmq DEALER/ROUTER echo of the same act messages, and bare
   onnxruntime inference of the same policy (batch 1); floor = echo + inference. Against it, the
   runtime's act round trip (PolicyClient.act to `agent-runtime serve`), p50 and p99, sequential.
2. fleets: 1, 8, 32 and 64 robots, each a real client and control loop at 100 Hz with a 10 ms
   deadline, sending recorded observations of the task: achieved rates, latency, misses, errors.
3. maximum acts per second: 64 closed-loop clients against servers with max_batch 1, 8 and 64.
4. fuzz: malformed messages (each must get its error code) interleaved with valid acts (none may be
   lost), and frames over the socket cap; the server must still answer afterwards.
Targets: act p99 <= 1.5x the floor's p99; 64 robots at 100 Hz with zero missed 10 ms deadlines;
batching >= 2x the maximum acts per second for the pixel student.

The server and the robot fleets run in separate processes (`agent-runtime serve`, and
bench/serve_workers.py) so that they never share a GIL.

Usage: python -m bench.serve_bench [--seconds 30] [--fleet 1 8 32 64] [--fuzz 10000] [--parts round_trip fleet ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import zmq

from agent_runtime import protocol
from agent_runtime.client import ClientConfig, PolicyClient
from agent_runtime.frames import recv_frames, send_frames
from agent_runtime.protocol import Message
from agent_runtime.server import default_max_message_bytes
from agent_runtime.spec import ONNX_ACTION_OUTPUT, PolicySpec
from bench.serve_students import build_student, record_observations, spec_for
from bench.serve_workers import load_observations

START_S = 30.0  # longest wait for a server or worker process to come up


class Student:
    """One policy under test: its model file, spec, and recorded observations."""

    def __init__(self, label: str, model: Path, observations: Path, tmp: Path) -> None:
        self.label = label
        self.model = model
        self.observations_file = observations
        self.observations = load_observations(observations)
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.spec = PolicySpec.from_json(session.get_modelmeta().custom_metadata_map["agent_runtime.spec"])
        self.spec_file = tmp / f"{label}.spec.json"
        self.spec_file.write_text(self.spec.to_json())
        self.cap = default_max_message_bytes(self.spec)


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@contextmanager
def serving(
    student: Student, max_batch: int, threads: int, log: Path, workers: int = 0, cpus: set[int] | None = None
) -> Iterator[str]:
    """`agent-runtime serve` for the student in a subprocess; yields its endpoint once it answers hello.

    ``workers``: its --workers; ``cpus``: the cores it (and every process it starts) may run on.
    """
    endpoint = free_endpoint()
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--model", str(student.model), "--endpoint", endpoint]
    cmd += ["--max-batch", str(max_batch), "--threads", str(threads), "--log-every-s", "0", "--no-watch"]
    cmd += ["--workers", str(workers)]
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)
    try:
        with PolicyClient(ClientConfig(endpoint=endpoint, connect_timeout_s=START_S), student.spec) as client:
            client.connect()
        yield endpoint
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited during the benchmark; see {log}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(START_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f"the server did not stop on SIGTERM; see {log}") from None


def run_workers(
    kind: str, student: Student, endpoint: str, clients: int, workers: int, tmp: Path, **extra: Any
) -> list[dict[str, Any]]:
    """Start ``clients`` clients of ``kind`` spread over ``workers`` processes; wait for and read their results."""
    start_at = time.time() + 2.0 + 0.05 * clients  # time for every process to import and connect
    procs = []
    per = [clients // workers + (i < clients % workers) for i in range(workers)]
    offset = 0
    for i, n in enumerate(p for p in per if p):
        out = tmp / f"{kind}-{student.label}-{clients}-{i}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.serve_workers", kind, "--endpoint", endpoint, "--out", str(out)]
        cmd += ["--spec", str(student.spec_file), "--observations", str(student.observations_file)]
        cmd += ["--clients", str(n), "--offset", str(offset), "--start-at", str(start_at)]
        for key, value in extra.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        procs.append((subprocess.Popen(cmd), out))
        offset += n
    results = []
    for proc, out in procs:
        if proc.wait(timeout=START_S + 10 * float(extra.get("seconds", 10)) + 120) != 0:
            raise RuntimeError(f"a {kind} worker failed (exit code {proc.returncode})")
        results.append(json.loads(out.read_text()))
    return results


def ms(values: np.ndarray | list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q) * 1e3) if len(values) else math.nan


def timed(fn: Any, seconds: float) -> np.ndarray:
    durations = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - t)
    return np.asarray(durations[10:])  # the first calls warm caches and connections


# -- 1. floors and round trip ----------------------------------------------------------------------


def bare_round_trips(student: Student, frames: list[Any], seconds: float, tmp: Path, infer: bool) -> np.ndarray:
    """Round-trip times of ``frames`` against the echo worker: a bare echo, or with ``infer`` bare serving."""
    endpoint = free_endpoint()
    ready = tmp / "echo.json"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.serve_workers", "echo", "--endpoint", endpoint, "--out", str(ready)]
    if infer:
        cmd += ["--model", str(student.model)]
    echo = subprocess.Popen(cmd)
    context: zmq.Context[Any] = zmq.Context()
    try:
        give_up = time.monotonic() + START_S
        while not ready.exists():
            if time.monotonic() > give_up:
                raise RuntimeError("the echo server did not start")
            time.sleep(0.05)  # polling for another process's start-up file, not synchronising threads
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoint)

        def echo_once() -> None:
            send_frames(dealer, frames)
            if not dealer.poll(5000):
                raise RuntimeError("the echo server stopped answering")
            recv_frames(dealer)

        times = timed(echo_once, seconds)
        dealer.close()
    finally:
        echo.send_signal(signal.SIGTERM)
        echo.wait(START_S)
        context.term()
    return times


def round_trip(student: Student, seconds: float, threads: int, tmp: Path) -> dict[str, float]:
    obs = {name: student.observations[0][name] for name in student.spec.observation_names}
    frames = list(protocol.encode(Message("act", 1, 0.0, obs, {"deadline_ms": 1000.0})))
    echo_s = bare_round_trips(student, frames, seconds, tmp, infer=False)
    bare_s = bare_round_trips(student, frames, seconds, tmp, infer=True)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(student.model), options, providers=["CPUExecutionProvider"])
    feed = {name: obs[name][None] for name in student.spec.observation_names}
    infer_s = timed(lambda: session.run([ONNX_ACTION_OUTPUT], feed), seconds)

    with (
        serving(student, 32, threads, tmp / "server.log") as endpoint_rt,
        PolicyClient(ClientConfig(endpoint=endpoint_rt), student.spec) as client,
    ):
        client.connect()
        act_s = timed(lambda: client.act(obs, time.monotonic() + 1.0), seconds)
    floor50 = ms(echo_s, 50) + ms(infer_s, 50)
    floor99 = ms(echo_s, 99) + ms(infer_s, 99)
    return {
        "echo_p50": ms(echo_s, 50),
        "echo_p99": ms(echo_s, 99),
        "infer_p50": ms(infer_s, 50),
        "infer_p99": ms(infer_s, 99),
        "floor_p50": floor50,
        "floor_p99": floor99,
        "act_p50": ms(act_s, 50),
        "act_p99": ms(act_s, 99),
        "ratio_p99": ms(act_s, 99) / floor99,
        "bare_p50": ms(bare_s, 50),
        "bare_p99": ms(bare_s, 99),
        "bare_ratio_p99": ms(act_s, 99) / ms(bare_s, 99),
        "samples": float(len(act_s)),
    }


# -- 2. fleets ---------------------------------------------------------------------------------------


def fleet_cell(student: Student, endpoint: str, robots: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    results = run_workers(
        "fleet", student, endpoint, robots, args.workers, tmp,
        rate_hz=args.rate_hz, deadline_ms=args.deadline_ms, seconds=args.seconds,
        phase_step=0.0 if args.phase == "sync" else 1.0 / args.rate_hz / robots,
    )  # fmt: skip
    clients = [c for r in results for c in r["clients"]]
    summaries = [c["summary"] for c in clients]
    latency = [x for c in clients for x in c["latency_s"]]
    errors: Counter[str] = Counter()
    for c in clients:
        errors.update(c["client_errors"])
    rates = [s["achieved_hz"] for s in summaries]
    return {
        "robots": robots,
        "rate_mean": float(np.mean(rates)),
        "rate_min": float(np.min(rates)),
        "p50": ms(latency, 50),
        "p99": ms(latency, 99),
        "steps": sum(s["steps"] for s in summaries),
        "misses": sum(s["misses"] for s in summaries),
        "overruns": sum(s["overruns"] for s in summaries),
        "errors": dict(errors),
    }


# -- 3. maximum acts per second -------------------------------------------------------------------


def max_rate(student: Student, max_batch: int, args: argparse.Namespace, tmp: Path) -> float:
    with serving(student, max_batch, args.threads, tmp / "server.log") as endpoint:
        results = run_workers("flood", student, endpoint, args.flood_clients, args.workers, tmp, seconds=args.seconds)
    return sum(r["acts"] for r in results) / args.seconds


# -- 4. fuzz ------------------------------------------------------------------------------------------


def fuzz_run(student: Student, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with serving(student, 32, args.threads, tmp / "server.log") as endpoint:
        fuzzed = run_workers("fuzz", student, endpoint, 1, 1, tmp, messages=args.fuzz, cap=student.cap)[0]
        with PolicyClient(ClientConfig(endpoint=endpoint), student.spec) as client:
            client.connect()
            client.act(student.observations[0], time.monotonic() + 5.0)  # still serving afterwards
            fuzzed["server_stats"] = client.server_stats(time.monotonic() + 5.0)
    return fuzzed


def prepare(args: argparse.Namespace, tmp: Path) -> list[Student]:
    students = []
    for label, mode, given in (("pixel", "pixels", args.pixel_model), ("state", "state", args.state_model)):
        observations = record_observations(args.preset, mode, args.record_steps, tmp / f"{label}.npz")
        model = given or build_student(spec_for(args.preset, mode), observations, tmp / f"{label}.onnx")
        students.append(Student(label, model, observations, tmp))
    return students


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def pair(a: float, b: float, digits: int = 3) -> str:
    return f"{a:.{digits}f} / {b:.{digits}f}"


def report_round_trips(students: list[Student], args: argparse.Namespace, tmp: Path, report: dict[str, Any]) -> None:
    print(f"\n1. act round trip against the floor, sequential, {args.seconds:g} s each (ms)\n")
    print(
        row(
            "student", "echo p50 / p99", "inference p50 / p99", "floor p50 / p99", "act p50 / p99", "act p99 / floor",
            "bare serving p50 / p99", "act p99 / bare",
        )
    )  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in students:
        r = report.setdefault("round_trip", {})[s.label] = round_trip(s, args.seconds, args.threads, tmp)
        print(
            row(
                s.label,
                pair(r["echo_p50"], r["echo_p99"]),
                pair(r["infer_p50"], r["infer_p99"]),
                pair(r["floor_p50"], r["floor_p99"]),
                pair(r["act_p50"], r["act_p99"]),
                f"{r['ratio_p99']:.2f}x",
                pair(r["bare_p50"], r["bare_p99"]),
                f"{r['bare_ratio_p99']:.2f}x",
            )
        )


def report_fleets(students: list[Student], args: argparse.Namespace, tmp: Path, report: dict[str, Any]) -> None:
    phase = "in phase" if args.phase == "sync" else "phases spread over the period"
    print(f"\n2. fleets at {args.rate_hz:g} Hz ({phase}), {args.deadline_ms:g} ms deadline, {args.seconds:g} s each\n")
    print(row("student", "robots", "Hz mean / min", "latency p50 / p99 (ms)", "steps", "misses", "overruns", "errors"))
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for s in students:
        with serving(s, 32, args.threads, tmp / "server.log") as endpoint:
            for robots in args.fleet:
                c = fleet_cell(s, endpoint, robots, args, tmp)
                report.setdefault("fleet", {}).setdefault(s.label, []).append(c)
                rates, latency = pair(c["rate_mean"], c["rate_min"], 1), pair(c["p50"], c["p99"], 2)
                print(
                    row(s.label, robots, rates, latency, c["steps"], c["misses"], c["overruns"], c["errors"] or "none")
                )


def report_max_rates(students: list[Student], args: argparse.Namespace, tmp: Path, report: dict[str, Any]) -> None:
    print(f"\n3. maximum acts per second, {args.flood_clients} closed-loop clients, {args.seconds:g} s each\n")
    print(row("student", *(f"max_batch {b}" for b in args.batches), "best / first"))
    print("|---|" + "---:|" * (len(args.batches) + 1))
    for s in students:
        rates = {b: max_rate(s, b, args, tmp) for b in args.batches}
        report.setdefault("max_rate", {})[s.label] = rates
        gain = max(rates.values()) / rates[args.batches[0]]
        print(row(s.label, *(f"{rates[b]:,.0f}" for b in args.batches), f"{gain:.2f}x"))


def report_fuzz(students: list[Student], args: argparse.Namespace, tmp: Path, report: dict[str, Any]) -> None:
    student = students[0]
    print(f"\n4. fuzz: {args.fuzz} malformed messages interleaved with valid acts ({student.label} student)\n")
    f = report["fuzz"] = fuzz_run(student, args, tmp)
    print(f"- error replies by code: {f['error_replies']}")
    print(f"- frames over the socket cap (dropped by libzmq, no reply by design): {f['dropped_at_socket']}")
    print(f"- missing or wrong error replies: {f['wrong_count']}")
    print(f"- valid acts answered: {f['valid_ok']} of {f['valid_sent']} ({f['valid_lost']} lost)")
    print(f"- server errors by code afterwards: {f['server_stats']['errors']}; still serving: yes")
    for line in f["wrong"]:
        print(f"  {line}")


PARTS = {"round_trip": report_round_trips, "fleet": report_fleets, "max_rate": report_max_rates, "fuzz": report_fuzz}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measuring time per cell")
    parser.add_argument("--fleet", type=int, nargs="+", default=[1, 8, 32, 64], help="robot counts")
    parser.add_argument("--rate-hz", type=float, default=100.0)
    parser.add_argument("--deadline-ms", type=float, default=10.0)
    parser.add_argument(
        "--phase",
        choices=["sync", "spread"],
        default="sync",
        help="fleet: every robot ticks at the same instant (worst case), or spread evenly over the period",
    )
    parser.add_argument("--fuzz", type=int, default=10_000, help="malformed messages")
    parser.add_argument("--flood-clients", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64], help="max_batch settings, first = base")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads in the server")
    parser.add_argument("--preset", default="inverted_pendulum")
    parser.add_argument("--record-steps", type=int, default=256)
    parser.add_argument("--pixel-model", type=Path, help="an exported pixel student (default: a stand-in)")
    parser.add_argument("--state-model", type=Path, help="an exported state student (default: a stand-in)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which sections to run")
    args = parser.parse_args()
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        students = prepare(args, tmp)
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; preset {args.preset}")
        for s in students:
            size = sum(o.numpy_dtype.itemsize * math.prod(o.shape) for o in s.spec.observations)
            print(f"- {s.label} student: {s.model.name} ({s.spec.provenance.policy}); observation {size} bytes")
        for part in args.parts:
            PARTS[part](students, args, tmp, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
