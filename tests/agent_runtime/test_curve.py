"""CURVE: encryption, and a client without an authorized key getting nothing at all (key files: test_keys.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from agent_runtime import protocol
from agent_runtime.client import ClientConfig, DeadlineExceeded, PolicyClient, ServerUnavailable
from agent_runtime.keys import create_keypair
from agent_runtime.protocol import Message
from tests.agent_runtime.conftest import FakePolicy, running_server, state_obs, state_spec

REFUSED_WAIT_S = 0.3  # how long an unauthorized client is given to (not) get an answer


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """server, robot1 (authorized) and robot2 (not): key pairs in tmp_path; robot1.key in tmp_path/authorized."""
    for name in ("server", "robot1", "robot2"):
        create_keypair(tmp_path, name)
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "robot1.key").write_bytes((tmp_path / "robot1.key").read_bytes())
    return tmp_path


def curve_client(endpoint: str, keys: Path, robot: str) -> PolicyClient:
    config = ClientConfig(
        endpoint=endpoint,
        server_public_key=keys / "server.key",
        curve_secret_key=keys / f"{robot}.key_secret",
        connect_timeout_s=REFUSED_WAIT_S,
    )
    return PolicyClient(config, state_spec())


def curve_server(keys: Path, authorized: bool = True):
    return running_server(
        FakePolicy(state_spec()),
        curve_secret_key=keys / "server.key_secret",
        authorized_keys=keys / "authorized" if authorized else None,
    )


def test_an_authorized_client_is_served_over_curve(keys):
    with curve_server(keys) as server, curve_client(server.endpoint, keys, "robot1") as client:
        client.connect(time.monotonic() + 5)
        np.testing.assert_array_equal(client.act(state_obs(0.5), time.monotonic() + 5), [0.5, 0.5])


def test_a_client_with_an_unauthorized_key_gets_nothing(keys):
    with curve_server(keys) as server:
        with (
            curve_client(server.endpoint, keys, "robot2") as client,
            pytest.raises((ServerUnavailable, DeadlineExceeded)),
        ):
            client.connect()
        with curve_client(server.endpoint, keys, "robot1") as client:
            client.connect(time.monotonic() + 5)
            stats = client.server_stats(time.monotonic() + 5)
    assert stats["requests"] == {"hello": 1, "stats": 1}  # robot2's hello never reached the server


def test_a_client_without_curve_gets_nothing(keys, peer_factory):
    with curve_server(keys) as server:
        plain = PolicyClient(ClientConfig(endpoint=server.endpoint, connect_timeout_s=REFUSED_WAIT_S), state_spec())
        with plain, pytest.raises((ServerUnavailable, DeadlineExceeded)):
            plain.connect()
        raw = peer_factory(server.endpoint)
        raw.send(list(protocol.encode(Message("ping", 1, 0.0))))
        assert raw.receive_raw(REFUSED_WAIT_S) is None


def test_encryption_without_client_authentication_accepts_any_client_key(keys):
    with curve_server(keys, authorized=False) as server, curve_client(server.endpoint, keys, "robot2") as client:
        client.connect(time.monotonic() + 5)
