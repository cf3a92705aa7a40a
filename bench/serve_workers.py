"""Worker processes of the serving benchmark: echo floor, robot fleets, floods and the fuzzer.

Each runs as ``python -m bench.serve_workers KIND --out FILE.json ...`` in its own process (so that
clients and server never share a GIL), and writes its results as JSON. Workers import only the
runtime, as a robot host would.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from agent_runtime import protocol
from agent_runtime.client import ClientConfig, ClientError, PolicyClient
from agent_runtime.frames import recv_frames, send_frames
from agent_runtime.loop import LoopConfig, run_loop
from agent_runtime.onnx_policy import OnnxPolicy
from agent_runtime.protocol import Code, Message
from agent_runtime.spec import PolicySpec


def load_observations(path: Path) -> list[dict[str, np.ndarray]]:
    """Recorded observations (``bench.serve_students.record_observations``), one dict per step."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    n = len(next(iter(arrays.values())))
    return [{k: np.ascontiguousarray(v[i]) for k, v in arrays.items()} for i in range(n)]


class RecordedRobot:
    """A robot that replays recorded observations (from ``offset``, cycling) and ignores actions."""

    def __init__(self, spec: PolicySpec, observations: list[dict[str, np.ndarray]], offset: int) -> None:
        self._spec = spec
        self._obs = observations
        self._i = offset
        self.applied = 0

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    def reset(self) -> None:
        pass

    def observe(self) -> dict[str, np.ndarray]:
        self._i = (self._i + 1) % len(self._obs)
        return self._obs[self._i]

    def apply(self, action: np.ndarray) -> None:
        self.applied += 1


def _wait_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        time.sleep(delay)  # all workers start their clients at the same wall-clock instant


def fleet(args: argparse.Namespace, spec: PolicySpec, observations: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """``clients`` control loops at ``rate_hz``, each with its own client, for ``seconds``."""
    results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
    config = LoopConfig(rate_hz=args.rate_hz, deadline_ms=args.deadline_ms, duration_s=args.seconds)

    def one(i: int) -> None:
        robot = RecordedRobot(spec, observations, offset=(args.offset + i) * 7)
        with PolicyClient(ClientConfig(endpoint=args.endpoint, connect_timeout_s=30), spec) as client:
            client.connect()
            # Robots started independently tick at unrelated phases (--phase-step spreads them over
            # the period); 0 starts every loop at the same instant, the worst case for the server.
            _wait_until(args.start_at + (args.offset + i) * args.phase_step)
            stats = run_loop(robot, client, config)
        results[i] = {
            "summary": stats.summary(),
            "latency_s": stats.latency.values().tolist(),
            "client_errors": dict(client.stats.errors),
            "stale_replies": client.stats.stale_replies,
        }

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clients": results}


def flood(args: argparse.Namespace, spec: PolicySpec, observations: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """``clients`` closed loops sending acts back to back for ``seconds``: the maximum acts per second."""
    counts = [0] * args.clients
    failures: Counter[str] = Counter()

    def one(i: int) -> None:
        with PolicyClient(ClientConfig(endpoint=args.endpoint, connect_timeout_s=30), spec) as client:
            client.connect()
            _wait_until(args.start_at)
            end = time.monotonic() + args.seconds
            k = i * 7
            while time.monotonic() < end:
                k = (k + 1) % len(observations)
                try:
                    client.act(observations[k], time.monotonic() + 1.0)
                    counts[i] += 1
                except ClientError as exc:
                    failures[exc.code] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"acts": sum(counts), "seconds": args.seconds, "failures": dict(failures)}


def _malformed(
    rng: np.random.Generator, spec: PolicySpec, obs: dict[str, np.ndarray], cap: int
) -> tuple[list[Any], str]:
    """One malformed message and the error code it must get."""
    rid = int(rng.integers(0, 2**63))
    first = spec.observations[0]
    bad_obs = dict(obs)
    kind = int(rng.integers(0, 12))
    if kind == 0:
        return [rng.bytes(int(rng.integers(1, 64)))], Code.MALFORMED
    if kind == 1:
        return [msgpack.packb({"v": 99, "type": "act", "id": rid, "t": 0.0})], Code.BAD_VERSION
    if kind == 2:
        return [msgpack.packb({"v": 1, "type": "reboot", "id": rid, "t": 0.0})], Code.UNKNOWN_TYPE
    if kind == 3:
        del bad_obs[first.name]
        code = Code.MISSING_ARRAY
    elif kind == 4:
        bad_obs["extra"] = np.zeros(3, np.float32)
        code = Code.UNEXPECTED_ARRAY
    elif kind == 5:
        bad_obs[first.name] = obs[first.name].astype(np.float64 if first.dtype == "float32" else np.int16)
        code = Code.BAD_DTYPE
    elif kind == 6:
        bad_obs[first.name] = obs[first.name][None]
        code = Code.BAD_SHAPE
    elif kind == 7 and (floats := [e.name for e in spec.observations if e.dtype == "float32"]):
        value = obs[floats[0]].copy()
        value[int(rng.integers(0, value.size))] = rng.choice([np.nan, np.inf, -np.inf])
        bad_obs[floats[0]] = value
        code = Code.NON_FINITE
    elif kind == 7:  # no float entry to spoil (camera frames alone): a wrong shape instead
        bad_obs[first.name] = obs[first.name][None]
        code = Code.BAD_SHAPE
    elif kind == 8:
        frames = list(protocol.encode(Message("act", rid, 0.0, obs)))
        return frames[:-1], Code.MALFORMED  # an array frame missing
    elif kind == 9:
        frames = list(protocol.encode(Message("act", rid, 0.0, obs)))
        return [*frames[:-1], bytes(frames[-1])[:-1]], Code.MALFORMED  # a frame one byte short
    elif kind == 10:
        return [msgpack.packb({"v": 1, "type": "act", "id": rid, "t": 0.0}), *[b"\0" * (cap // 2)] * 3], Code.TOO_LARGE
    else:
        return list(protocol.encode(Message("hello", rid, 0.0, fields={"spec": "{not json"}))), Code.MALFORMED
    return list(protocol.encode(Message("act", rid, 0.0, bad_obs))), code


def fuzz(args: argparse.Namespace, spec: PolicySpec, observations: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """``messages`` malformed messages, each followed by its error reply, with a valid act every ``valid_every``."""
    rng = np.random.default_rng(0)
    context: zmq.Context[Any] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    cap = args.cap
    got: Counter[str] = Counter()
    wrong: list[str] = []
    valid_sent = valid_ok = valid_lost = dropped_at_socket = 0

    def reply_to(frames: list[Any]) -> Message | None:
        sock.send_multipart(frames, copy=False)
        if not sock.poll(5000):
            return None
        return protocol.decode(sock.recv_multipart(), 1 << 24)

    for i in range(args.messages):
        if i % 1000 == 999:
            # A frame over the socket cap: libzmq drops the sender's connection without a reply, so it
            # comes from a throwaway socket.
            throwaway = context.socket(zmq.DEALER)
            throwaway.setsockopt(zmq.LINGER, 0)
            throwaway.connect(args.endpoint)
            throwaway.send_multipart([b"x", b"\0" * (cap + 1)])
            throwaway.close()
            dropped_at_socket += 1
            continue
        frames, code = _malformed(rng, spec, observations[i % len(observations)], cap)
        reply = reply_to(frames)
        if reply is None or reply.error is None:
            wrong.append(f"message {i}: expected {code}, got {reply}")
        else:
            got[reply.error[0]] += 1
            if reply.error[0] != code:
                wrong.append(f"message {i}: expected {code}, got {reply.error}")
        if i % args.valid_every == 0:
            valid_sent += 1
            valid = reply_to(list(protocol.encode(Message("act", i, 0.0, observations[i % len(observations)]))))
            ok = valid is not None and valid.type == "act" and valid.request_id == i
            valid_ok += ok
            valid_lost += not ok
    sock.close()
    context.term()
    return {
        "malformed": args.messages,
        "error_replies": dict(got),
        "dropped_at_socket": dropped_at_socket,
        "wrong": wrong[:20],
        "wrong_count": len(wrong),
        "valid_sent": valid_sent,
        "valid_ok": valid_ok,
        "valid_lost": valid_lost,
    }


def echo(args: argparse.Namespace) -> None:
    """A bare ROUTER that sends every message straight back: the transport floor.

    With ``--model``, a bare serving loop instead: the array frames of each act message go straight
    into onnxruntime (no header parsing, no checks, the spec's layout assumed) and the reply is the
    header frame and the action's bytes. What is left between it and the runtime is the protocol.
    """
    context: zmq.Context[Any] = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(args.endpoint)
    answer = _bare_policy(Path(args.model)) if args.model else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Path(args.out).write_text(json.dumps({"ready": True}))
    while not stop.is_set():
        if sock.poll(50):
            frames = recv_frames(sock)
            send_frames(sock, frames if answer is None else answer(frames))
    sock.close()
    context.term()


def _bare_policy(model: Path) -> Any:
    policy = OnnxPolicy(model, threads=1)
    layout = [(e.name, e.numpy_dtype, (1, *e.shape)) for e in policy.spec.observations]

    def answer(frames: list[bytes]) -> list[bytes]:
        arrays = zip(layout, frames[2:], strict=True)  # the act frames carry the entries in spec order
        action = policy.infer({name: np.frombuffer(f, dtype).reshape(shape) for (name, dtype, shape), f in arrays})
        return [frames[0], frames[1], action.tobytes()]

    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["fleet", "flood", "fuzz", "echo"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--spec", help="policy spec JSON file")
    parser.add_argument("--model", help="echo: run this ONNX policy on each message (bare serving floor)")
    parser.add_argument("--observations", help="recorded observations (npz)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--rate-hz", type=float, default=100.0)
    parser.add_argument("--deadline-ms", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start time (time.time())")
    parser.add_argument("--phase-step", type=float, default=0.0, help="fleet: start robot k at start-at + k * this")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--valid-every", type=int, default=5)
    parser.add_argument("--cap", type=int, default=1 << 20, help="the server's max_message_bytes")
    args = parser.parse_args()
    # Each control loop warns on its first miss; the benchmark counts misses instead.
    logging.getLogger("agent_runtime").setLevel(logging.ERROR)
    if args.kind == "echo":
        echo(args)
        return
    spec = PolicySpec.from_json(Path(args.spec).read_text())
    observations = load_observations(Path(args.observations))
    result = {"fleet": fleet, "flood": flood, "fuzz": fuzz}[args.kind](args, spec, observations)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
