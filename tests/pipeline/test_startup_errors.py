"""Start-up failures of serve and robot: one ``error:`` line naming the endpoint or file and the fix, exit 1."""

from __future__ import annotations

import errno
import re

import pytest
import zmq

from agent_runtime.endpoints import endpoint_error
from pipeline.cli import main
from tests.agent_runtime.conftest import FakePolicy, build_onnx_policy, running_server, state_spec


def _one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def model(tmp_path):
    return build_onnx_policy(state_spec(), tmp_path / "policy.onnx")


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("nonsense", "endpoint 'nonsense' does not parse; use tcp://HOST:PORT"),
        ("tcp://127.0.0.1", "endpoint 'tcp://127.0.0.1' has no port"),
        ("tcp://127.0.0.1:99999", "the port must be 0 to 65535, or \\* for any free one"),
        ("tcp://127.0.0.1:\uff15\uff15", "the port must be 0 to 65535"),  # full-width digits are not a port
        ("foo://x", "cannot serve on foo://x: ZeroMQ has no such transport"),
        ("tcp://no-such-host.invalid:5555", "cannot serve on tcp://no-such-host.invalid:5555: not a usable address"),
        ("ipc:///no/such/dir/sock", "cannot serve on ipc:///no/such/dir/sock: the path's directory must exist"),
    ],
)
def test_serve_on_an_endpoint_that_cannot_be_bound(model, capsys, endpoint, message):
    line = _one_error_line(capsys, ["serve", "--model", str(model), "--endpoint", endpoint])
    assert re.search(message, line), line


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["in-process", "broker"])
def test_serve_on_an_endpoint_in_use(model, capsys, workers):
    with running_server(FakePolicy(state_spec())) as server:
        line = _one_error_line(capsys, ["serve", "--model", str(model), "--endpoint", server.endpoint, *workers])
    assert f"cannot serve on {server.endpoint}: the address is in use" in line


def test_no_permission_is_named_with_its_fix():
    error = endpoint_error("tcp://0.0.0.0:80", zmq.ZMQError(errno.EACCES), binding=True)
    assert str(error).startswith("cannot serve on tcp://0.0.0.0:80: no permission (TCP ports below 1024")


def test_serve_with_key_and_model_files_that_are_missing_or_wrong(model, tmp_path, capsys):
    missing = tmp_path / "none.key_secret"
    assert f"no key file at {missing}" in _one_error_line(
        capsys, ["serve", "--model", str(model), "--curve-secret-key", str(missing)]
    )
    junk = tmp_path / "junk.key_secret"
    junk.write_text("not a key file\n")
    assert f"{junk} is not a ZeroMQ key file" in _one_error_line(
        capsys, ["serve", "--model", str(model), "--curve-secret-key", str(junk)]
    )
    assert "no policy file at" in _one_error_line(capsys, ["serve", "--model", str(tmp_path / "absent.onnx")])
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("hello")
    assert f"{not_onnx}: onnxruntime cannot load it" in _one_error_line(capsys, ["serve", "--model", str(not_onnx)])


def test_robot_with_an_endpoint_or_keys_it_cannot_use(tmp_path, capsys):
    line = _one_error_line(capsys, ["robot", "--mode", "state", "--connect", "nonsense"])
    assert "endpoint 'nonsense' does not parse" in line
    missing = tmp_path / "server.key"
    line = _one_error_line(
        capsys,
        ["robot", "--mode", "state", "--server-public-key", str(missing), "--curve-secret-key", str(missing)],
    )
    assert f"no key file at {missing}" in line
