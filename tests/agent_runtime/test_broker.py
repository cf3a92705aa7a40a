"""``serve --workers``: the broker in front of worker processes answers as one server, survives a dead worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from agent_runtime import protocol
from agent_runtime.broker import Broker
from agent_runtime.client import ClientConfig, PolicyClient
from agent_runtime.protocol import Code, Message
from agent_runtime.server_config import ServerConfig
from tests.agent_runtime.conftest import (
    WAIT_S,
    RawPeer,
    build_onnx_policy,
    header,
    reference_action,
    state_obs,
    state_spec,
)
from tests.agent_runtime.test_schemas import REPLY

pytestmark = pytest.mark.skipif(os.name != "posix", reason="worker deaths are simulated with POSIX signals")

START_S = 60.0  # spawning a worker imports numpy, zmq and onnxruntime afresh


class RunningBroker:
    def __init__(self, broker: Broker, thread: threading.Thread) -> None:
        self.broker = broker
        self.thread = thread

    @property
    def endpoint(self) -> str:
        return self.broker.endpoint

    def worker_pids(self) -> list[int]:
        pool = self.broker._pool
        assert pool is not None
        return [w.process.pid for w in pool.workers.values() if w.process.pid is not None]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, Path]]:
    """Two workers behind one broker, shared by the tests of this module (spawning workers takes seconds)."""
    spec = state_spec()
    model = build_onnx_policy(spec, tmp_path_factory.mktemp("broker") / "policy.onnx")
    broker = Broker(model, spec, ServerConfig(endpoint="tcp://127.0.0.1:*", log_every_s=0), workers=2)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            broker.serve()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="broker", daemon=True)
    thread.start()
    try:
        broker.wait_ready(START_S)
    except RuntimeError:
        raise errors[0] if errors else RuntimeError("the broker failed to start") from None
    yield RunningBroker(broker, thread), model
    broker.stop()
    thread.join(WAIT_S)
    assert not thread.is_alive(), "the broker did not stop"
    assert not errors, errors


def wait_for(predicate: Any, what: str, timeout_s: float = START_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def act_message(request_id: int, value: float) -> Message:
    return Message(protocol.ACT, request_id, time.time(), state_obs(value), {"deadline_ms": 5000.0})


def test_requests_are_answered_by_the_workers_as_by_one_server(served):
    running, _ = served
    spec = state_spec()
    with PolicyClient(ClientConfig(endpoint=running.endpoint, connect_timeout_s=WAIT_S), spec) as client:
        assert client.connect() == spec
        for i in range(50):
            action = client.act(state_obs(0.01 * i), time.monotonic() + WAIT_S)
            np.testing.assert_allclose(action, reference_action(spec, state_obs(0.01 * i)), rtol=1e-5)
        assert client.ping(time.monotonic() + WAIT_S).type == protocol.PING


def test_load_is_spread_over_the_workers_and_stats_cover_them_all(served, peer_factory):
    running, _ = served
    peer = peer_factory(running.endpoint)
    before = running.broker.snapshot()["requests"].get("act", 0)
    # Many requests in flight at once: the least-busy rule sends them to both workers.
    for i in range(200):
        peer.send(list(protocol.encode(act_message(i, 0.5))))
    ids = sorted(peer.receive().request_id for _ in range(200))
    assert ids == list(range(200))
    pool = running.broker._pool
    assert pool is not None

    def counted() -> dict[str, Any] | None:
        peer.send([header(type="stats", id=999)])
        reply = peer.receive()
        assert reply.type == protocol.STATS and reply.request_id == 999
        stats: dict[str, Any] = reply.fields["stats"]
        return stats if stats["requests"].get("act", 0) >= before + 200 else None

    stats = wait_for(counted, "the workers' reports reaching the broker")
    peer.send([header(type="stats", id=1000)])
    raw = peer.receive_raw(WAIT_S)
    assert raw is not None
    REPLY.validate(json.loads(json.dumps(msgpack.unpackb(raw[0]))))  # NaN-free: acts were served
    assert stats["workers"] == {"count": 2, "ready": 2, "restarts": 0}
    assert stats["batches"]["count"] >= 1 and stats["latency"]["count"] >= 200
    per_worker = [w.counts["requests"].get("act", 0) for w in pool.workers.values()]
    assert all(n > 0 for n in per_worker), f"every worker should have served some acts: {per_worker}"


def test_a_malformed_stats_request_gets_its_error_from_the_broker(served, peer_factory):
    running, _ = served
    peer = peer_factory(running.endpoint)
    peer.send([header(type="stats", id=5, v=99)])
    reply = peer.receive()
    assert reply.type == protocol.ERROR and reply.fields["code"] == Code.BAD_VERSION and reply.request_id == 5
    peer.send([b"\xc1 not msgpack"])  # unreadable: goes to a worker, which answers it
    reply = peer.receive()
    assert reply.fields["code"] == Code.MALFORMED and reply.request_id is None


def test_a_dead_worker_fails_its_pending_requests_once_and_is_replaced(served, peer_factory):
    running, _ = served
    peer = peer_factory(running.endpoint)
    victim = running.worker_pids()[0]
    os.kill(victim, signal.SIGSTOP)  # it holds what it is sent, as a hung worker would
    try:
        for i in range(40):
            peer.send(list(protocol.encode(act_message(1000 + i, 0.2))))
        # The other worker answers what it is given at once; wait until only the victim's requests are left.
        answered = {}
        for _ in range(40):
            frames = peer.receive_raw(1.0)
            if frames is None:
                break
            reply = protocol.decode(frames, 1 << 24)
            answered[reply.request_id] = reply
    finally:
        os.kill(victim, signal.SIGKILL)
        os.kill(victim, signal.SIGCONT)
    assert len(answered) < 40, "the stopped worker should have been sent some of the requests"
    while len(answered) < 40:
        reply = peer.receive()
        assert reply.request_id not in answered, f"request {reply.request_id} was answered twice"
        answered[reply.request_id] = reply
        assert reply.type == protocol.ERROR and reply.fields["code"] == Code.POLICY_ERROR
        assert "stopped" in reply.fields["message"]
    assert peer.receive_raw(0.3) is None, "a request was answered more than once"
    wait_for(lambda: running.broker.snapshot()["workers"]["ready"] == 2, "the dead worker's replacement")
    assert running.broker.snapshot()["workers"]["restarts"] == 1
    assert victim not in running.worker_pids()
    for i in range(20):  # the replacement serves
        assert peer.request(act_message(2000 + i, 0.3)).type == protocol.ACT


def test_a_replaced_policy_file_is_swapped_in_by_every_worker(served, peer_factory, tmp_path):
    running, model = served
    spec = state_spec()
    peer = peer_factory(running.endpoint)
    obs = state_obs(0.4)
    new = build_onnx_policy(spec.with_provenance(policy="v2"), tmp_path / "new.onnx", gain=-2.0)
    os.replace(new, model)
    want = reference_action(spec, obs, gain=-2.0)

    def all_new() -> bool:
        # 16 requests in flight at once reach both workers; every answer must come from the new policy.
        for i in range(16):
            peer.send(list(protocol.encode(act_message(3000 + i, 0.4))))
        replies = [peer.receive() for _ in range(16)]
        return all(np.allclose(r.arrays["action"], want, rtol=1e-5) for r in replies)

    wait_for(all_new, "every worker serving the new policy")


def test_a_worker_that_cannot_start_ends_the_start_up_with_one_error(tmp_path):
    spec = state_spec()
    model = build_onnx_policy(spec, tmp_path / "policy.onnx")
    broker = Broker(model, spec, ServerConfig(endpoint="tcp://127.0.0.1:*", log_every_s=0), workers=1)
    model.write_bytes(b"not an onnx file any more")  # the workers load the file themselves
    with pytest.raises(RuntimeError, match="inference worker 0 exited with code 1 before it was ready"):
        broker.serve()


def test_the_workers_stop_when_the_broker_is_killed(tmp_path):
    import subprocess
    import sys

    spec = state_spec()
    model = build_onnx_policy(spec, tmp_path / "policy.onnx")
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--model", str(model), "--workers", "2"]
    cmd += ["--endpoint", "tcp://127.0.0.1:*", "--log-every-s", "0", "--no-watch"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + START_S
        while not any("with 2 workers" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stderr.readline())
        pids = [int(line.split("(pid ")[1].split(")")[0]) for line in lines if " ready (pid " in line]
        assert len(pids) == 2
    finally:
        proc.kill()
        proc.wait(WAIT_S)

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"

    wait_for(lambda: all(gone(p) for p in pids), "the orphaned workers stopping", timeout_s=WAIT_S)


def test_serving_keeps_a_single_endpoint_semantics_for_dealer_delimiters(served):
    """A client that puts an empty delimiter first (as a REQ socket does) gets it back, as from one server."""
    running, _ = served
    context: zmq.Context[Any] = zmq.Context.instance()
    peer = RawPeer(running.endpoint, context)
    try:
        peer.send([b"", header(type="ping", id=77)])
        frames = peer.receive_raw(WAIT_S)
        assert frames is not None and frames[0] == b""
        assert protocol.decode(frames[1:], 1 << 20).request_id == 77
    finally:
        peer.close()


def test_a_fixed_seed_fuzz_through_the_broker_gets_one_reply_each(served, peer_factory):
    """The exactly-one-reply rule holds through the broker: malformed, stats and valid requests mixed."""
    import random

    from tests.agent_runtime.test_one_reply import _exchange, build

    running, _ = served
    peer = peer_factory(running.endpoint)
    rng = random.Random(1)
    for batch in range(20):
        _exchange(peer, [build(rng.choice, 50_000 + batch * 100 + i) for i in range(rng.randint(1, 50))])
