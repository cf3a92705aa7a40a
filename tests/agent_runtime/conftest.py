"""Shared builders for the runtime tests: small specs, fake and ONNX policies, servers and raw sockets.

Servers bind 127.0.0.1 on a free port (``tcp://127.0.0.1:*``) or ipc://, and every wait has a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from agent_runtime import protocol
from agent_runtime.policy_server import PolicyServer
from agent_runtime.protocol import Message
from agent_runtime.server import serve_in_thread
from agent_runtime.server_config import ServerConfig
from agent_runtime.spec import ActionSpec, ObservationSpec, PolicySpec, Provenance, Quantity

WAIT_S = 5.0  # the longest any test waits for something that should happen


def state_spec(dim: int = 3, action_dim: int = 2, high: float = 1.0, **changes: Any) -> PolicySpec:
    """A state-observation spec: ``state`` float32 (dim,), action in [-high, high]^action_dim."""
    fields: dict[str, Any] = {
        "observations": (
            ObservationSpec(
                "state", "float32", (dim,), "vector", quantities=tuple(Quantity(f"q{i}", "m") for i in range(dim))
            ),
        ),
        "action": ActionSpec(
            tuple(Quantity(f"a{i}", "N") for i in range(action_dim)), (-high,) * action_dim, (high,) * action_dim
        ),
        "control_period_s": 0.01,
        "action_repeat": 1,
        "provenance": Provenance(task_preset="test", env_id="Test-v0", policy="fake"),
    }
    fields.update(changes)
    return PolicySpec(**fields)


def pixel_spec(size: int = 8, history: int = 2, proprio: int = 2) -> PolicySpec:
    """A small pixel spec: ``pixels`` uint8 (size, size, 3*history) and ``proprio`` float32 (proprio,)."""
    return PolicySpec(
        observations=(
            ObservationSpec("pixels", "uint8", (size, size, 3 * history), "image", history=history),
            ObservationSpec(
                "proprio",
                "float32",
                (proprio,),
                "vector",
                quantities=tuple(Quantity(f"p{i}", "m") for i in range(proprio)),
            ),
        ),
        action=ActionSpec((Quantity("slide", "100 N"),), (-3.0,), (3.0,)),
        control_period_s=0.04,
        action_repeat=1,
        provenance=Provenance(task_preset="test", env_id="Test-v0", policy="fake"),
    )


def state_obs(value: float, dim: int = 3) -> dict[str, np.ndarray]:
    """A state observation whose first element is ``value`` (FakePolicy answers with it)."""
    obs = np.zeros(dim, dtype=np.float32)
    obs[0] = value
    return {"state": obs}


class FakePolicy:
    """An inference backend whose every action element is the first element of the first observation.

    So a test can tell which request an action answers. ``delay_s`` makes it slow; ``fail`` makes it raise.
    Records each batch size it was called with.
    """

    def __init__(self, spec: PolicySpec, delay_s: float = 0.0, fail: bool = False) -> None:
        self._spec = spec
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[int] = []
        self.called = threading.Event()

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    def infer(self, observations: Mapping[str, np.ndarray]) -> np.ndarray:
        first = observations[self._spec.observation_names[0]]
        self.batches.append(first.shape[0])
        self.called.set()
        if self.delay_s:
            time.sleep(self.delay_s)  # a deliberately slow policy
        if self.fail:
            raise RuntimeError("the fake policy was told to fail")
        values = first.reshape(first.shape[0], -1)[:, :1].astype(np.float32)
        return np.repeat(values, self._spec.action.dim, axis=1)


@contextmanager
def running_server(backend: Any, **config: Any) -> Iterator[PolicyServer]:
    """A server on a free loopback port (or ``endpoint=...``) in a thread, stopped on exit."""
    config.setdefault("endpoint", "tcp://127.0.0.1:*")
    config.setdefault("log_every_s", 0.0)
    with serve_in_thread(backend, ServerConfig(**config), timeout_s=WAIT_S) as server:
        yield server


class RawPeer:
    """A bare DEALER socket that sends arbitrary frames and reads replies with a deadline."""

    def __init__(self, endpoint: str, context: zmq.Context[Any]) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frames: list[Any]) -> None:
        self.sock.send_multipart(frames, copy=False)

    def receive(self, timeout_s: float = WAIT_S) -> Message:
        """The next reply, decoded; fails the test if none arrives in time."""
        frames = self.receive_raw(timeout_s)
        assert frames is not None, f"no reply within {timeout_s} s"
        return protocol.decode(frames, 1 << 24)

    def receive_raw(self, timeout_s: float) -> list[bytes] | None:
        if not self.sock.poll(int(timeout_s * 1e3), zmq.POLLIN):
            return None
        return self.sock.recv_multipart()

    def request(self, message: Message) -> Message:
        self.send(list(protocol.encode(message)))
        return self.receive()

    def close(self) -> None:
        self.sock.close(linger=0)


def header(**fields: Any) -> bytes:
    """A msgpack header with a valid version, id and timestamp unless overridden."""
    base: dict[str, Any] = {"v": protocol.PROTOCOL_VERSION, "type": "ping", "id": 7, "t": 1.5, "arrays": []}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not _DROP}, use_bin_type=True)


_DROP = object()
DROP: Any = _DROP
"""Pass as a field value to :func:`header` to leave that field out."""


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep (``[[[...]]]``): small on the wire, but ``repr`` of it overflows the stack."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class ScriptedServer:
    """A bare ROUTER in a thread that answers each request with ``answer(request)``: frames, or ``None``.

    For client tests that need a server that misbehaves in ways the real one never does.
    """

    def __init__(self, context: zmq.Context[Any], answer: Any) -> None:
        self.answer = answer
        self.requests: list[Message] = []
        self.errors: list[BaseException] = []
        self._decode = protocol.decode  # taken now: a test may patch the module's afterwards
        self._context = context
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.endpoint = ""

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        assert self._bound.wait(WAIT_S), "the scripted server did not bind"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        if self.errors:
            raise self.errors[0]

    def _serve(self) -> None:
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind("tcp://127.0.0.1:*")
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._bound.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(20, zmq.POLLIN):
                    continue
                identity, *frames = sock.recv_multipart()
                request = self._decode(frames, 1 << 24, protocol.REQUEST_TYPES)
                self.requests.append(request)
                reply = self.answer(request)
                if reply is not None:
                    sock.send_multipart([identity, *reply])
        except BaseException as exc:  # re-raised in the test's thread by __exit__
            self.errors.append(exc)
        finally:
            sock.close(linger=0)


def hello_reply(request: Message, served: PolicySpec, **fields: Any) -> list[Any]:
    """The frames of a valid hello reply serving ``served`` (``fields`` override or add header fields)."""
    body = {"spec": served.to_json(), "spec_hash": served.interface_hash(), **fields}
    return list(protocol.encode(Message("hello", request.request_id, request.client_time_s, fields=body)))


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def peer_factory(context: zmq.Context[Any]) -> Iterator[Any]:
    peers: list[RawPeer] = []

    def make(endpoint: str) -> RawPeer:
        peers.append(RawPeer(endpoint, context))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


CHUNK_STEP = 0.25
"""In a chunked test policy, action h of a chunk is the first one's pre-activation plus h times this."""


def build_onnx_policy(spec: PolicySpec, path: Path, gain: float = 1.0, metadata: str | None = None) -> Path:
    """Write a tiny ONNX policy for ``spec``: action = low + (high - low) * sigmoid(gain * sum of input means).

    Inputs are named after the spec's entries with a dynamic batch axis; the output is ``action``
    float32 (batch, A), or (batch, H, A) when the spec has an action chunk of H, whose action h adds
    ``h * CHUNK_STEP`` inside the sigmoid; the spec JSON sits in the metadata (or ``metadata`` instead,
    if given).
    """
    import onnx
    from onnx import TensorProto, helper

    nodes, inputs, means = [], [], []
    for entry in spec.observations:
        elem = TensorProto.UINT8 if entry.dtype == "uint8" else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info(entry.name, elem, ["batch", *entry.shape]))
        nodes.append(helper.make_node("Cast", [entry.name], [f"{entry.name}_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Flatten", [f"{entry.name}_f"], [f"{entry.name}_flat"], axis=1))
        nodes.append(helper.make_node("ReduceMean", [f"{entry.name}_flat"], [f"{entry.name}_mean"], axes=[1]))
        means.append(f"{entry.name}_mean")
    nodes.append(helper.make_node("Sum", means, ["total"]))
    dim = spec.action.dim
    low = np.asarray(spec.action.low, dtype=np.float32)
    span = np.asarray(spec.action.high, dtype=np.float32) - low
    initializers = [
        helper.make_tensor("gain", TensorProto.FLOAT, [1, dim], np.full(dim, gain, np.float32)),
        helper.make_tensor("low", TensorProto.FLOAT, [dim], low),
        helper.make_tensor("span", TensorProto.FLOAT, [dim], span),
    ]
    nodes.append(helper.make_node("MatMul", ["total", "gain"], ["pre"]))
    pre = "pre"
    out_shape: list[str | int] = ["batch", dim]
    if spec.action_chunk is not None:
        horizon = spec.action_chunk.horizon
        offsets = np.repeat(np.arange(horizon, dtype=np.float32)[:, None] * CHUNK_STEP, dim, axis=1)
        initializers += [
            helper.make_tensor("one", TensorProto.INT64, [1], np.array([1], np.int64)),
            helper.make_tensor("offsets", TensorProto.FLOAT, [horizon, dim], offsets),
        ]
        nodes += [
            helper.make_node("Unsqueeze", ["pre", "one"], ["pre3"]),
            helper.make_node("Add", ["pre3", "offsets"], ["pre_chunk"]),
        ]
        pre, out_shape = "pre_chunk", ["batch", horizon, dim]
    nodes += [
        helper.make_node("Sigmoid", [pre], ["unit"]),
        helper.make_node("Mul", ["unit", "span"], ["scaled"]),
        helper.make_node("Add", ["scaled", "low"], ["action"]),
    ]
    output = helper.make_tensor_value_info("action", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "policy", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"agent_runtime.spec": spec.to_json() if metadata is None else metadata})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference_action(spec: PolicySpec, obs: Mapping[str, np.ndarray], gain: float = 1.0) -> np.ndarray:
    """What :func:`build_onnx_policy`'s graph computes for one observation, in numpy: (A,) or (H, A)."""
    total = sum(float(obs[e.name].astype(np.float32).mean()) for e in spec.observations)
    low, high = np.asarray(spec.action.low), np.asarray(spec.action.high)
    pre = np.full(spec.action.dim, gain * total)
    if spec.action_chunk is not None:
        pre = pre[None] + np.arange(spec.action_chunk.horizon)[:, None] * CHUNK_STEP
    return (low + (high - low) / (1 + np.exp(-pre))).astype(np.float32)
