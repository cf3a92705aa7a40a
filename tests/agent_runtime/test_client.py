"""The client: spec check at connect, deadlines, late replies dropped, recovery after a server restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from agent_runtime import protocol
from agent_runtime.client import (
    ClientConfig,
    ClientError,
    DeadlineExceeded,
    PolicyClient,
    ServerError,
    ServerUnavailable,
    SpecChanged,
)
from agent_runtime.protocol import Message
from agent_runtime.spec import ObservationError, SpecError, SpecMismatchError
from tests.agent_runtime.conftest import (
    WAIT_S,
    FakePolicy,
    ScriptedServer,
    header,
    hello_reply,
    nested,
    running_server,
    state_obs,
    state_spec,
)

# How late a call may return after its deadline on a loaded 2-core CI machine (scheduling, not design).
SLACK_S = 0.1


def client_for(endpoint: str, spec=None, **config: Any) -> PolicyClient:
    return PolicyClient(ClientConfig(endpoint=endpoint, **config), spec or state_spec())


def in_ms(ms: float) -> float:
    return time.monotonic() + ms / 1e3


def test_connect_returns_the_server_spec_and_act_returns_actions():
    with running_server(FakePolicy(state_spec())) as server, client_for(server.endpoint) as client:
        assert client.connect() == state_spec()
        action = client.act(state_obs(0.5), in_ms(1000))
    np.testing.assert_array_equal(action, [0.5, 0.5])
    assert action.dtype == np.float32 and action.flags.writeable
    assert (client.stats.requests, client.stats.replies, client.stats.hellos) == (2, 2, 1)


def test_act_connects_first_when_needed():
    with running_server(FakePolicy(state_spec())) as server, client_for(server.endpoint) as client:
        np.testing.assert_array_equal(client.act(state_obs(0.25), in_ms(1000)), [0.25, 0.25])
        assert client.server_spec == state_spec()


def test_a_spec_mismatch_is_refused_at_connect_naming_the_fields():
    robot = state_spec(dim=4)
    with (
        running_server(FakePolicy(state_spec())) as server,
        client_for(server.endpoint, robot) as client,
        pytest.raises(SpecMismatchError) as info,
    ):
        client.connect()
    assert info.value.differences == [
        "observations.state.shape: the policy has (3,), the robot has (4,)",
        "observations.state.quantities: the policy has [q0 (m), q1 (m), q2 (m)], "
        "the robot has [q0 (m), q1 (m), q2 (m), q3 (m)]",
    ]
    assert "the robot's spec does not match the served policy's" in str(info.value)


def test_the_client_checks_the_spec_itself_when_the_server_does_not(context):
    """A server that answers hello with its spec but checks nothing: the client still refuses."""
    router = context.socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    errors: list[BaseException] = []

    def connect() -> None:
        with client_for(endpoint, state_spec(), connect_timeout_s=WAIT_S) as client:
            try:
                client.connect()
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=connect)
    thread.start()
    assert router.poll(int(WAIT_S * 1e3)), "no hello arrived"
    identity, *frames = router.recv_multipart()
    hello = protocol.decode(frames, 1 << 20, protocol.REQUEST_TYPES)
    served = state_spec(control_period_s=0.02)
    reply = Message("hello", hello.request_id, hello.client_time_s, fields={"spec": served.to_json()})
    router.send_multipart([identity, *protocol.encode(reply)])
    thread.join(WAIT_S)
    router.close(linger=0)
    assert len(errors) == 1 and isinstance(errors[0], SpecMismatchError)
    assert errors[0].differences == ["control_period_s: the policy has 0.02, the robot has 0.01"]


def test_a_slow_policy_raises_deadline_exceeded_on_time():
    with running_server(FakePolicy(state_spec(), delay_s=0.3)) as server, client_for(server.endpoint) as client:
        client.connect()
        deadline = in_ms(30)
        with pytest.raises(DeadlineExceeded):
            client.act(state_obs(0.5), deadline)
        assert time.monotonic() - deadline < SLACK_S
    assert client.stats.errors == {"timeout": 1}


def test_a_late_reply_is_dropped_and_never_returned_for_a_newer_request():
    backend = FakePolicy(state_spec(), delay_s=0.2)
    with running_server(backend) as server, client_for(server.endpoint) as client:
        client.connect()
        with pytest.raises(DeadlineExceeded):
            client.act(state_obs(0.125), in_ms(20))
        backend.delay_s = 0.0
        # The server answers the first request (0.125) before it reads this one; the client drops it.
        action = client.act(state_obs(0.75), in_ms(2000))
    np.testing.assert_array_equal(action, [0.75, 0.75])
    assert client.stats.stale_replies == 1


def test_no_server_raises_unavailable_by_the_deadline(tmp_path):
    with client_for(f"ipc://{tmp_path}/nobody") as client:
        deadline = in_ms(50)
        with pytest.raises(ServerUnavailable):
            client.connect(deadline)
        assert time.monotonic() - deadline < SLACK_S


def test_an_error_reply_raises_server_error_with_its_code():
    with (
        running_server(FakePolicy(state_spec(), fail=True)) as server,
        client_for(server.endpoint) as client,
        pytest.raises(ServerError) as info,
    ):
        client.act(state_obs(0.5), in_ms(2000))
    assert info.value.code == "policy_error"


def test_a_bad_observation_is_refused_before_sending():
    with running_server(FakePolicy(state_spec())) as server, client_for(server.endpoint) as client:
        client.connect()
        with pytest.raises(ObservationError, match="NaN or Inf"):
            client.act({"state": np.array([0, np.nan, 0], np.float32)}, in_ms(1000))
    assert client.stats.requests == 1  # the hello only


def test_ping_and_server_stats():
    with running_server(FakePolicy(state_spec())) as server, client_for(server.endpoint) as client:
        assert client.ping(in_ms(1000)).fields["timing"]["server_us"] > 0
        client.act(state_obs(0.1), in_ms(1000))
        assert client.server_stats(in_ms(1000))["requests"] == {"ping": 1, "hello": 1, "act": 1, "stats": 1}


def act_until_served(client: PolicyClient, value: float) -> tuple[np.ndarray, list[str]]:
    """Act with 100 ms deadlines until one succeeds (at most WAIT_S); returns it and the failures before."""
    failures: list[str] = []
    give_up = time.monotonic() + WAIT_S
    while time.monotonic() < give_up:
        try:
            return client.act(state_obs(value), in_ms(100)), failures
        except ClientError as exc:
            failures.append(exc.code)
    raise AssertionError(f"not served again within {WAIT_S} s; failures: {failures}")


def restart_endpoint(tmp_path: Path) -> str:
    """Where a server restarts: ipc://, since another process may take a just-released TCP port."""
    return f"ipc://{tmp_path}/policy"


def test_the_client_recovers_by_itself_when_the_server_restarts(tmp_path):
    with running_server(FakePolicy(state_spec()), endpoint=restart_endpoint(tmp_path)) as server:
        endpoint = server.endpoint
        client = client_for(endpoint)
        np.testing.assert_array_equal(client.act(state_obs(0.25), in_ms(1000)), [0.25, 0.25])
    with client:
        with pytest.raises((ServerUnavailable, DeadlineExceeded)):
            client.act(state_obs(0.5), in_ms(50))
        with running_server(FakePolicy(state_spec()), endpoint=endpoint):
            action, _ = act_until_served(client, 0.5)
    np.testing.assert_array_equal(action, [0.5, 0.5])
    assert client.stats.hellos == 1  # same spec: no new hello was needed


def test_a_restarted_server_with_another_spec_is_checked_again(tmp_path):
    with running_server(FakePolicy(state_spec()), endpoint=restart_endpoint(tmp_path)) as server:
        endpoint = server.endpoint
        client = client_for(endpoint)
        client.act(state_obs(0.25), in_ms(1000))
    with client, running_server(FakePolicy(state_spec(high=2.0)), endpoint=endpoint):
        failures = []
        give_up = time.monotonic() + WAIT_S
        while time.monotonic() < give_up:
            try:
                client.act(state_obs(0.5), in_ms(100))
            except SpecChanged:
                failures.append("spec_changed")
            except SpecMismatchError as exc:
                failures.append("mismatch")
                assert "action.high: the policy has [2.0, 2.0], the robot has [1.0, 1.0]" in str(exc)
                break
            except ClientError as exc:
                failures.append(exc.code)
        assert failures[-2:] == ["spec_changed", "mismatch"], failures


def test_client_config_validation_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="connect_timeout_s is 0"):
        ClientConfig(connect_timeout_s=0)
    with pytest.raises(ValueError, match="both server_public_key and curve_secret_key"):
        ClientConfig(server_public_key=tmp_path / "server.key")


# -- a hostile or broken server: a ClientError (or SpecError) by the deadline, never a crash ------------


def reply_frames(request: Message, **fields: Any) -> list[Any]:
    return list(protocol.encode(Message("error", request.request_id, request.client_time_s, fields=fields)))


HOSTILE_HELLO_REPLIES: list[Any] = [
    ("error code and message nested 1000 deep", lambda r: reply_frames(r, code=nested(1000), message=nested(1000))),
    (
        "spec_mismatch with differences nested 1000 deep",
        lambda r: reply_frames(r, code="spec_mismatch", message="no", differences=[nested(1000)]),
    ),
    ("id nested 1000 deep", lambda r: [header(type="hello", id=nested(1000))]),
    ("spec over the int digit limit", lambda r: hello_reply(r, state_spec(), spec="1" * 5000)),
    ("spec nested 1000 deep", lambda r: hello_reply(r, state_spec(), spec=nested(1000))),
]


@pytest.mark.parametrize("answer", [pytest.param(a, id=i) for i, a in HOSTILE_HELLO_REPLIES])
def test_a_hostile_hello_reply_is_refused_by_the_deadline(context, answer):
    with ScriptedServer(context, answer) as server, client_for(server.endpoint) as client:
        deadline = in_ms(300)
        with pytest.raises((ClientError, SpecError)) as info:
            client.connect(deadline)
        assert time.monotonic() - deadline < SLACK_S
    assert len(str(info.value)) < 2000


def test_a_reply_that_breaks_the_decoder_unexpectedly_counts_as_malformed(context, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Message:
        raise RecursionError("a decoder bug")

    with (
        ScriptedServer(context, lambda request: hello_reply(request, state_spec())) as server,
        client_for(server.endpoint) as client,
    ):
        monkeypatch.setattr(protocol, "decode", broken)
        with pytest.raises(DeadlineExceeded):
            client.connect(in_ms(300))
    assert client.stats.malformed_replies == 1


def serve_actions(action: np.ndarray) -> Any:
    """A scripted server's answer: a valid hello, and ``action`` to every act request."""

    def answer(request: Message) -> list[Any]:
        if request.type == "hello":
            return hello_reply(request, state_spec())
        reply = Message(
            "act",
            request.request_id,
            request.client_time_s,
            {"action": action},
            {"spec_hash": state_spec().interface_hash()},
        )
        return list(protocol.encode(reply))

    return answer


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_action_is_refused(context, bad):
    with (
        ScriptedServer(context, serve_actions(np.array([0.5, bad], np.float32))) as server,
        client_for(server.endpoint) as client,
        pytest.raises(ClientError, match="NaN or Inf"),
    ):
        client.act(state_obs(0.5), in_ms(1000))
    assert client.stats.malformed_replies == 1


def test_a_reply_already_queued_when_the_deadline_has_passed_is_not_returned(context):
    """The call raises by its deadline even if the awaited reply is sitting in the socket."""

    def answer(request: Message) -> list[Any] | None:
        if request.type == "hello":
            return hello_reply(request, state_spec())
        # The reply to the next ping, sent after this one has timed out and before the next is asked.
        time.sleep(0.1)
        assert request.request_id is not None
        return list(protocol.encode(Message("ping", request.request_id + 1, 0.0)))

    with ScriptedServer(context, answer) as server, client_for(server.endpoint) as client:
        client.connect()
        with pytest.raises(DeadlineExceeded):
            client.ping(in_ms(20))
        assert client._sock.poll(int(WAIT_S * 1e3)), "the early reply never arrived"
        with pytest.raises(DeadlineExceeded):
            client.ping(time.monotonic() - 1e-3)  # its deadline has passed, though its reply is queued


def test_after_a_spec_mismatch_act_sends_at_most_one_hello_per_retry_interval():
    robot = state_spec(high=2.0)
    with (
        running_server(FakePolicy(state_spec())) as server,
        client_for(server.endpoint, robot, hello_retry_s=0.3) as client,
    ):
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(SpecMismatchError, match=r"action\.high: the policy has \[1\.0, 1\.0\]"):
                client.act(state_obs(0.5), in_ms(200))
        if time.monotonic() - started < 0.3:  # always, unless the machine stalled for 300 ms
            assert client.stats.hellos == 1
        time.sleep(0.35)
        with pytest.raises(SpecMismatchError):
            client.act(state_obs(0.5), in_ms(200))
        assert client.stats.hellos >= 2
        assert client.server_stats(in_ms(1000))["requests"]["hello"] == client.stats.hellos
