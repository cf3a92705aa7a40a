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
from agent_runtime.spec import ObservationError, SpecMismatchError
from tests.agent_runtime.conftest import WAIT_S, FakePolicy, running_server, state_obs, state_spec

# How late a call may return after its deadline on a loaded 2-core CI machine (scheduling, not design).
SLACK_S = 0.02


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


def restart_endpoint(kind: str, tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/policy" if kind == "ipc" else "tcp://127.0.0.1:*"


@pytest.mark.parametrize("kind", ["ipc", "tcp"])
def test_the_client_recovers_by_itself_when_the_server_restarts(tmp_path, kind):
    with running_server(FakePolicy(state_spec()), endpoint=restart_endpoint(kind, tmp_path)) as server:
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


def test_a_restarted_server_with_another_spec_is_checked_again():
    with running_server(FakePolicy(state_spec())) as server:
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
