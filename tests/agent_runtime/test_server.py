"""The policy server: replies, every malformed input's error (the server stays up), batching, swaps, shutdown."""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from agent_runtime import protocol
from agent_runtime.endpoints import EndpointError
from agent_runtime.protocol import Code, Message
from agent_runtime.server_config import ServerConfig, default_max_message_bytes
from agent_runtime.spec import SpecMismatchError
from tests.agent_runtime.conftest import (
    WAIT_S,
    FakePolicy,
    build_onnx_policy,
    header,
    nested,
    pixel_spec,
    reference_action,
    running_server,
    state_obs,
    state_spec,
)


def act(value: float, request_id: int = 1, **fields: Any) -> Message:
    return Message("act", request_id, 123.5, state_obs(value), fields)


def assert_serves(peer, value: float = 0.25, request_id: int = 99) -> None:
    reply = peer.request(act(value, request_id))
    assert reply.type == "act", reply.fields
    assert reply.request_id == request_id
    np.testing.assert_array_equal(reply.arrays["action"], [value, value])


# -- valid requests -------------------------------------------------------------------------------


def test_act_reply_echoes_id_and_timestamp_and_carries_timing(peer_factory):
    backend = FakePolicy(state_spec())
    with running_server(backend) as server:
        reply = peer_factory(server.endpoint).request(act(0.5, request_id=2**64 - 1))
    assert (reply.type, reply.request_id, reply.client_time_s) == ("act", 2**64 - 1, 123.5)
    action = reply.arrays["action"]
    assert action.dtype == np.float32 and action.shape == (2,)
    np.testing.assert_array_equal(action, [0.5, 0.5])
    timing = reply.fields["timing"]
    assert set(timing) == {"queue_us", "infer_us", "server_us", "batch"} and timing["batch"] == 1
    assert 0 <= timing["queue_us"] <= timing["server_us"] and timing["infer_us"] <= timing["server_us"]
    assert reply.fields["spec_hash"] == state_spec().interface_hash()


def test_actions_are_clipped_to_the_spec_bounds(peer_factory):
    with running_server(FakePolicy(state_spec(high=1.0))) as server:
        reply = peer_factory(server.endpoint).request(act(7.0))
    np.testing.assert_array_equal(reply.arrays["action"], [1.0, 1.0])


def test_hello_returns_the_spec_and_limits(peer_factory):
    spec = pixel_spec()
    with running_server(FakePolicy(spec)) as server:
        reply = peer_factory(server.endpoint).request(Message("hello", 5, 0.0, fields={"spec": spec.to_json()}))
    assert reply.type == "hello" and reply.request_id == 5
    assert reply.fields["spec"] == spec.to_json() and reply.fields["spec_hash"] == spec.interface_hash()
    # 8 * 8 * 6 pixels + 2 float32 proprio + the largest header
    assert reply.fields["limits"] == {"max_message_bytes": 384 + 8 + protocol.MAX_HEADER_BYTES, "max_batch": 32}
    assert default_max_message_bytes(spec) == 384 + 8 + protocol.MAX_HEADER_BYTES


def test_hello_with_a_mismatched_spec_names_the_fields(peer_factory):
    robot = state_spec(high=2.0)
    with running_server(FakePolicy(state_spec())) as server:
        reply = peer_factory(server.endpoint).request(Message("hello", 5, 0.0, fields={"spec": robot.to_json()}))
    assert reply.error is not None and reply.error[0] == Code.SPEC_MISMATCH
    assert reply.fields["differences"] == [
        "action.low: the policy has [-1.0, -1.0], the robot has [-2.0, -2.0]",
        "action.high: the policy has [1.0, 1.0], the robot has [2.0, 2.0]",
    ]


def test_ping_and_stats(peer_factory):
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        assert peer.request(Message("ping", 3, 0.0)).type == "ping"
        assert_serves(peer)
        peer.send([b"garbage"])
        assert peer.receive().error is not None
        stats = peer.request(Message("stats", 4, 0.0)).fields["stats"]
    assert stats["requests"] == {"ping": 1, "act": 1, "stats": 1}
    assert stats["errors"] == {"malformed": 1}
    assert stats["batches"]["sizes"] == {"1": 1} and stats["latency"]["count"] == 1
    assert stats["latency"]["p50_ms"] > 0


class LineWaiter(logging.Handler):
    """Sets ``seen`` when a log message matches ``pattern``."""

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.INFO)
        self.pattern = pattern
        self.seen = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if re.fullmatch(self.pattern, self.lines[-1]):
            self.seen.set()


def test_a_statistics_line_is_logged_periodically(peer_factory):
    waiter = LineWaiter(
        r"requests 1 \(act=1\); errors 1 \(malformed=1\); act latency p50 [\d.]+ ms, "
        r"p99 [\d.]+ ms, max [\d.]+ ms; batches 1, mean size 1.00, max 1"
    )
    server_log = logging.getLogger("agent_runtime.policy_server")
    server_log.addHandler(waiter)
    level = server_log.level
    server_log.setLevel(logging.INFO)
    try:
        with running_server(FakePolicy(state_spec()), log_every_s=0.05) as server:
            peer = peer_factory(server.endpoint)
            assert_serves(peer)
            peer.send([b"garbage"])
            peer.receive()
            assert waiter.seen.wait(WAIT_S), waiter.lines
    finally:
        server_log.removeHandler(waiter)
        server_log.setLevel(level)


def test_a_req_socket_client_is_answered_too(context):
    with running_server(FakePolicy(state_spec())) as server:
        req = context.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoint)
        req.send_multipart(protocol.encode(act(0.75)))
        assert req.poll(int(WAIT_S * 1e3)), "no reply"
        reply = protocol.decode(req.recv_multipart(), 1 << 20)
        req.close()
    np.testing.assert_array_equal(reply.arrays["action"], [0.75, 0.75])


# -- malformed input: an error reply, and the server keeps serving everyone --------------------------


def act_frames(arrays: dict[str, np.ndarray], **fields: Any) -> list[Any]:
    return list(protocol.encode(Message("act", 11, 2.0, arrays, fields)))


BAD_REQUESTS: list[Any] = [
    ("malformed header", [b"\x93\x01"], Code.MALFORMED, None),
    ("wrong protocol version", [header(v=99, id=11)], Code.BAD_VERSION, 11),
    ("unknown type", [header(type="reboot", id=11)], Code.UNKNOWN_TYPE, 11),
    ("reply type sent as a request", [header(type="error", id=11)], Code.UNKNOWN_TYPE, 11),
    ("array missing", act_frames({}), Code.MISSING_ARRAY, 11),
    ("unexpected array", act_frames({**state_obs(0.0), "extra": np.zeros(1, np.float32)}), Code.UNEXPECTED_ARRAY, 11),
    ("wrong dtype", act_frames({"state": np.zeros(3, np.float64)}), Code.BAD_DTYPE, 11),
    ("wrong shape", act_frames({"state": np.zeros((1, 3), np.float32)}), Code.BAD_SHAPE, 11),
    ("NaN", act_frames({"state": np.array([0, np.nan, 0], np.float32)}), Code.NON_FINITE, 11),
    ("Inf", act_frames({"state": np.array([0, 0, -np.inf], np.float32)}), Code.NON_FINITE, 11),
    ("oversized message", [header(id=11), *[b"\0" * 3000] * 3], Code.TOO_LARGE, 11),
    (
        "frame disagrees with header",
        [header(id=11, arrays=[{"name": "state", "dtype": "float32", "shape": [3]}]), b"\0"],
        Code.MALFORMED,
        11,
    ),
    ("bad deadline", act_frames(state_obs(0.0), deadline_ms=-5), Code.MALFORMED, 11),
    # docs/protocol.md: header checks (deadline_ms among them) come before the observation checks
    ("bad deadline and array missing", act_frames({}, deadline_ms="soon"), Code.MALFORMED, 11),
    ("hello with a broken spec", [header(type="hello", id=11, spec="{")], Code.MALFORMED, 11),
    # json.loads raises a plain ValueError for an int over Python's 4300-digit limit.
    ("hello with a spec over the int digit limit", [header(type="hello", id=11, spec="1" * 5000)], Code.MALFORMED, 11),
    (
        "missing and unexpected array",  # docs/protocol.md: unexpected_array is checked first
        act_frames({"extra": np.zeros(1, np.float32)}),
        Code.UNEXPECTED_ARRAY,
        11,
    ),
    # Values nested 1000 deep: a few bytes per level, but repr() of one overflows the stack.
    ("id nested 1000 deep", [header(id=nested(1000))], Code.MALFORMED, None),
    ("timestamp nested 1000 deep", [header(id=11, t=nested(1000))], Code.MALFORMED, 11),
    ("deadline nested 1000 deep", act_frames(state_obs(0.0), deadline_ms=nested(1000)), Code.MALFORMED, 11),
    (
        "dtype nested 1000 deep",
        [header(type="act", id=11, arrays=[{"name": "state", "dtype": nested(1000), "shape": [3]}]), b"\0" * 12],
        Code.BAD_DTYPE,
        11,
    ),
    ("many frames", [header(id=11), *[b""] * 10_000], Code.TOO_LARGE, 11),
    (
        "huge shape",
        [header(type="act", id=11, arrays=[{"name": "state", "dtype": "float32", "shape": [2**39] * 8}]), b"\0" * 12],
        Code.TOO_LARGE,
        11,
    ),
]


@pytest.mark.parametrize(("frames", "code", "echo_id"), [pytest.param(f, c, e, id=i) for i, f, c, e in BAD_REQUESTS])
def test_malformed_input_gets_its_error_and_the_server_stays_up(peer_factory, frames, code, echo_id):
    backend = FakePolicy(state_spec())
    with running_server(backend, max_message_bytes=8192) as server:
        bad, other = peer_factory(server.endpoint), peer_factory(server.endpoint)
        bad.send(frames)
        reply = bad.receive()
        assert reply.error is not None, reply
        assert reply.error[0] == code, reply.error
        assert reply.request_id == echo_id
        assert 0 < len(reply.error[1]) < 500  # a short message that says what is wrong
        assert_serves(other)
        assert_serves(bad)
        assert backend.batches == [1, 1]  # the bad request never reached the policy


def test_echoed_untrusted_text_never_makes_a_reply_header_too_large(peer_factory):
    """A 60 KB message type, and a hello spec whose every difference quotes 60 KB: both replies fit the cap."""
    robot = state_spec()
    quantities = tuple(protocol_quantity(f"{i}" + "q" * 21_600) for i in range(3))
    robot = dataclasses.replace(
        robot, observations=(dataclasses.replace(robot.observations[0], quantities=quantities),)
    )
    hello = header(type="hello", id=12, spec=robot.to_json())
    assert len(hello) < protocol.MAX_HEADER_BYTES
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        for frames, code in [([header(type="x" * 60_000, id=11)], Code.UNKNOWN_TYPE), ([hello], Code.SPEC_MISMATCH)]:
            peer.send(frames)
            raw = peer.receive_raw(WAIT_S)
            assert raw is not None, "no reply"
            assert len(raw[0]) <= protocol.MAX_HEADER_BYTES
            reply = protocol.decode(raw, 1 << 20)
            assert reply.error is not None and reply.error[0] == code
        assert_serves(peer)


def protocol_quantity(name: str) -> Any:
    from agent_runtime.spec import Quantity

    return Quantity(name, "m")


def test_an_unexpected_failure_while_handling_a_message_gets_malformed_and_the_server_stays_up(
    peer_factory, monkeypatch, caplog
):
    """The last line of defence: a bug in a check must not end the serving thread."""
    checks = protocol.check_observation

    def broken_once(spec, arrays, request):
        if request.request_id == 1:
            raise RecursionError("a check that blew up")
        checks(spec, arrays, request)

    monkeypatch.setattr(protocol, "check_observation", broken_once)
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        reply = peer.request(act(0.5, request_id=1))
        assert reply.error is not None and reply.error[0] == Code.MALFORMED and reply.request_id == 1
        assert "RecursionError" in reply.error[1]
        assert_serves(peer)
        stats = peer.request(Message("stats", 2, 0.0)).fields["stats"]
    assert stats["errors"] == {"malformed": 1}
    assert "could not handle a message" in caplog.text


def test_a_frame_over_the_socket_cap_disconnects_only_its_sender(peer_factory):
    with running_server(FakePolicy(state_spec()), max_message_bytes=4096) as server:
        bad, other = peer_factory(server.endpoint), peer_factory(server.endpoint)
        assert_serves(bad)
        bad.send([header(id=1), b"\0" * 100_000])
        assert_serves(other)
        # libzmq drops the connection without delivering the frame, so no reply ever comes for it; the
        # sender's socket reconnects by itself and is served again. A request sent before the drop is
        # lost with the connection, so the sender asks until it is answered.
        replies: list[Message] = []
        give_up = time.monotonic() + WAIT_S
        while not any(r.type == "act" for r in replies) and time.monotonic() < give_up:
            bad.send(list(protocol.encode(act(0.25, request_id=100 + len(replies)))))
            frames = bad.receive_raw(0.2)
            replies += [protocol.decode(frames, 1 << 20)] if frames is not None else []
        assert replies and replies[-1].type == "act", f"not served again within {WAIT_S} s"
        np.testing.assert_array_equal(replies[-1].arrays["action"], [0.25, 0.25])
        stats = other.request(Message("stats", 1, 0.0)).fields["stats"]
    assert stats["errors"] == {}  # the server never saw the oversized frame
    assert all(r.type == "act" for r in replies)


def test_a_failing_policy_gets_policy_error_and_the_server_stays_up(peer_factory):
    backend = FakePolicy(state_spec(), fail=True)
    with running_server(backend) as server:
        peer = peer_factory(server.endpoint)
        reply = peer.request(act(0.5))
        assert reply.error == (Code.POLICY_ERROR, "inference failed: RuntimeError: the fake policy was told to fail")
        backend.fail = False
        assert_serves(peer)


class BrokenOutput(FakePolicy):
    def __init__(self, output: np.ndarray) -> None:
        super().__init__(state_spec())
        self.output = output

    def infer(self, observations):
        return self.output


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (np.zeros((1, 3), np.float32), "shape (1, 3); expected (1, 2)"),
        (np.array([[0.0, np.nan]], np.float32), "NaN or Inf"),
    ],
)
def test_a_policy_returning_bad_actions_gets_policy_error(peer_factory, output, message):
    with running_server(BrokenOutput(output)) as server:
        reply = peer_factory(server.endpoint).request(act(0.5))
    assert reply.error is not None and reply.error[0] == Code.POLICY_ERROR and message in reply.error[1]


# -- batching ------------------------------------------------------------------------------------------


def send_while_busy(server, backend, peers, values) -> list[Message]:
    """Send one act from ``peers[0]``, then, while the policy is busy with it, one from each other peer."""
    peers[0].send(list(protocol.encode(act(values[0], request_id=0))))
    assert backend.called.wait(WAIT_S), "the policy was never called"
    for i, (peer, value) in enumerate(zip(peers[1:], values[1:], strict=True), start=1):
        peer.send(list(protocol.encode(act(value, request_id=i))))
    return [peer.receive() for peer in peers]


@pytest.mark.parametrize(("max_batch", "expected"), [(32, [1, 7]), (4, [1, 4, 3])])
def test_requests_that_arrive_together_share_one_inference_call(peer_factory, max_batch, expected):
    # The policy takes 300 ms, so the other seven requests are all queued long before it returns.
    backend = FakePolicy(state_spec(), delay_s=0.3)
    values = [i / 10 for i in range(8)]
    with running_server(backend, max_batch=max_batch) as server:
        peers = [peer_factory(server.endpoint) for _ in values]
        replies = send_while_busy(server, backend, peers, values)
    assert backend.batches == expected
    for i, (reply, value) in enumerate(zip(replies, values, strict=True)):
        assert reply.request_id == i  # each robot gets the answer to its own observation
        np.testing.assert_allclose(reply.arrays["action"], [value, value])
    # Every reply says the size of the batch it was inferred in (which requests share one is up to
    # the socket's fair queueing across robots).
    assert sorted(r.fields["timing"]["batch"] for r in replies) == sorted(b for b in expected for _ in range(b))


def test_max_wait_lets_a_batch_wait_for_more(peer_factory):
    backend = FakePolicy(state_spec())
    with running_server(backend, max_wait_ms=500) as server:
        first, second = peer_factory(server.endpoint), peer_factory(server.endpoint)
        first.send(list(protocol.encode(act(0.1, request_id=1))))
        second.send(list(protocol.encode(act(0.2, request_id=2))))
        replies = [first.receive(), second.receive()]
    assert backend.batches == [2]
    assert [r.request_id for r in replies] == [1, 2]


def test_a_batch_never_waits_past_a_requests_deadline(peer_factory):
    backend = FakePolicy(state_spec())
    with running_server(backend, max_wait_ms=900) as server:
        peer = peer_factory(server.endpoint)
        peer.send(list(protocol.encode(act(0.1, request_id=1, deadline_ms=50))))
        reply = peer.receive()
    assert reply.type == "act"
    # Read, waited for company until 50 ms after receipt at most, inferred, replied: not the 900 ms wait.
    assert reply.fields["timing"]["server_us"] < 500_000


def test_a_request_whose_deadline_passed_before_inference_is_not_run(peer_factory):
    backend = FakePolicy(state_spec())
    with running_server(backend) as server:
        peer = peer_factory(server.endpoint)
        # One microsecond: less than decoding and checking the request take in the server.
        peer.send(list(protocol.encode(act(0.2, request_id=2, deadline_ms=0.001))))
        reply = peer.receive()
        assert_serves(peer)
    assert reply.error is not None and reply.error[0] == Code.DEADLINE_EXPIRED and reply.request_id == 2
    assert backend.batches == [1]


# -- swapping the model -----------------------------------------------------------------------------


class Doubling(FakePolicy):
    def infer(self, observations):
        return 2 * super().infer(observations)


def test_a_compatible_policy_is_swapped_in_without_dropping_connections(peer_factory):
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        assert_serves(peer, 0.25)
        server.swap(Doubling(state_spec().with_provenance(policy="v2")))
        reply = peer.request(act(0.25, request_id=5))
        np.testing.assert_array_equal(reply.arrays["action"], [0.5, 0.5])
        assert server.spec.provenance.policy == "v2"


def test_an_incompatible_policy_is_refused_and_the_old_one_kept(peer_factory):
    with running_server(FakePolicy(state_spec())) as server:
        with pytest.raises(SpecMismatchError, match=r"action\.high: the served policy has \[1\.0, 1\.0\], the new"):
            server.swap(Doubling(state_spec(high=3.0)))
        assert_serves(peer_factory(server.endpoint))


def test_server_config_validation_names_the_field():
    with pytest.raises(ValueError, match="max_batch is 0"):
        ServerConfig(max_batch=0)
    with pytest.raises(ValueError, match="authorized_keys needs curve_secret_key"):
        ServerConfig(authorized_keys=Path("keys"))
    # The endpoint is checked where it is bound: one error line at start-up (tests/pipeline/test_startup_errors.py).
    with (
        pytest.raises(EndpointError, match=r"endpoint '127\.0\.0\.1:5555' does not parse"),
        running_server(FakePolicy(state_spec()), endpoint="127.0.0.1:5555"),
    ):
        pass


def test_a_second_server_on_a_taken_endpoint_fails_at_start(peer_factory):
    with (
        running_server(FakePolicy(state_spec())) as server,
        pytest.raises(EndpointError, match="the address is in use"),
        running_server(FakePolicy(state_spec()), endpoint=server.endpoint),
    ):
        pass


# -- the serve command: runs an ONNX file, stops cleanly on SIGINT and SIGTERM --------------------------


def read_lines(stream, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_command_answers_then_shuts_down_cleanly_on_signal(tmp_path, peer_factory, signum):
    spec = state_spec()
    model = build_onnx_policy(spec, tmp_path / "policy.onnx")
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--model", str(model), "--endpoint", "tcp://127.0.0.1:*"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        endpoint = None
        deadline = time.monotonic() + 60
        while endpoint is None:
            output.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
            found = re.search(r"serving .* on (tcp://\S+)", output[-1])
            endpoint = found.group(1) if found else None
        obs = state_obs(0.5)
        reply = peer_factory(endpoint).request(Message("act", 1, 0.0, obs))
        np.testing.assert_allclose(reply.arrays["action"], reference_action(spec, obs), rtol=1e-6)
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    while not lines.empty():
        output.append(lines.get_nowait())
    text = "".join(output)
    assert f"received {signal.Signals(signum).name}; shutting down" in text
    assert "served: requests 1 (act=1)" in text


def test_a_request_that_waited_out_its_deadline_in_the_queue_is_refused_without_inference(peer_factory):
    backend = FakePolicy(state_spec(), delay_s=0.3)
    with running_server(backend) as server:
        peer = peer_factory(server.endpoint)
        sent = time.time()
        peer.send(list(protocol.encode(Message("act", 1, sent, state_obs(0.1), {"deadline_ms": 1000.0}))))
        assert backend.called.wait(WAIT_S)
        # Sent while the first one's 300 ms inference runs, it waits in the socket
        # for longer than its 100 ms budget: running the policy for it would only make a late reply.
        peer.send(list(protocol.encode(Message("act", 2, time.time(), state_obs(0.2), {"deadline_ms": 100.0}))))
        first, second = peer.receive(), peer.receive()
        assert first.type == "act" and first.request_id == 1
        assert second.error is not None and second.error[0] == Code.DEADLINE_EXPIRED and second.request_id == 2
    assert backend.batches == [1]
