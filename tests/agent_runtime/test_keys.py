"""CURVE key files: written with a private secret file, errors that say what to do, the keys command."""

from __future__ import annotations

import stat

import pytest

from agent_runtime.keys import KeyFileError, create_keypair, load_keypair, load_public_key
from pipeline.cli import main
from tests.agent_runtime.conftest import FakePolicy, running_server, state_spec


def test_keys_are_written_with_a_private_secret_file(tmp_path):
    public, secret = create_keypair(tmp_path / "new", "robot")
    assert (public.name, secret.name) == ("robot.key", "robot.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub, sec = load_keypair(secret)
    assert load_public_key(public) == pub and len(pub) == len(sec) == 40
    with pytest.raises(KeyFileError, match="already exist; choose another name or pass --overwrite"):
        create_keypair(tmp_path / "new", "robot")
    assert create_keypair(tmp_path / "new", "robot", overwrite=True)[0] == public


def test_key_errors_say_what_to_do(tmp_path):
    public, _ = create_keypair(tmp_path, "server")
    with pytest.raises(KeyFileError, match=r"holds no secret key; pass the NAME\.key_secret file"):
        load_keypair(public)
    with pytest.raises(KeyFileError, match="no key file at"):
        load_public_key(tmp_path / "nope.key")
    with pytest.raises(KeyFileError, match="plain file name"):
        create_keypair(tmp_path, "../escape")
    (tmp_path / "empty").mkdir()
    with (
        pytest.raises(KeyFileError, match="holds no public keys"),
        running_server(
            FakePolicy(state_spec()),
            curve_secret_key=tmp_path / "server.key_secret",
            authorized_keys=tmp_path / "empty",
        ),
    ):
        pass


def test_keys_command(tmp_path, capsys):
    assert main(["keys", "--dir", str(tmp_path), "--name", "robot7"]) == 0
    out = capsys.readouterr().out
    assert f"public key: {tmp_path / 'robot7.key'}" in out and f"secret key: {tmp_path / 'robot7.key_secret'}" in out
    assert main(["keys", "--dir", str(tmp_path), "--name", "robot7"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
