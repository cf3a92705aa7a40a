"""Every request whose header can be read gets exactly one reply, carrying its id: generated, then fuzzed.

The requests are built from choices: hypothesis makes them (and shrinks a failure to its smallest
batch), and a fixed-seed fuzz makes a few thousand more with the same builder.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime import protocol
from tests.agent_runtime.conftest import WAIT_S, FakePolicy, running_server, state_spec

Choose = Callable[[Sequence[Any]], Any]
DROP = object()
NUMBERS = (0.0, 1.5, -2.0, 1e300, -0.0, math.inf, -math.inf, math.nan, 0, 7, -3, 10**12)


def _arrays(choose: Choose) -> tuple[list[dict[str, Any]], list[bytes]]:
    """An act's arrays: right, or wrong in one of the ways the checks name."""
    good = np.zeros(3, np.float32)
    kind = choose(["valid", "valid", "missing", "extra", "dtype", "shape", "nan", "count", "bytes", "wire_dtype"])
    described = [{"name": "state", "dtype": "float32", "shape": [3]}]
    frames = [good.tobytes()]
    if kind == "missing":
        described, frames = [], []
    elif kind == "extra":
        described.append({"name": "other", "dtype": "uint8", "shape": [2]})
        frames.append(b"\x00\x01")
    elif kind == "dtype":
        described[0]["dtype"] = "float64"
        frames = [good.astype(np.float64).tobytes()]
    elif kind == "shape":
        described[0]["shape"] = [1, 3]
    elif kind == "nan":
        frames = [np.array([np.nan, 0, 0], np.float32).tobytes()]
    elif kind == "count":
        frames = []
    elif kind == "bytes":
        frames = [b"\x00" * 5]
    elif kind == "wire_dtype":
        described[0]["dtype"] = "complex64"
    return described, frames


def build(choose: Choose, request_id: int) -> tuple[list[bytes], int | None]:
    """One request's frames, and the id its reply must carry (``None``: the id cannot be read)."""
    header: dict[Any, Any] = {
        "v": choose([1, 1, 1, 1, 0, 2, "1", None, DROP]),
        "type": choose(["act", "act", "act", "ping", "hello", "stats", "bogus", "error", 3, DROP]),
        "t": choose([*NUMBERS, True, "x", None, DROP]),
    }
    valid_id = choose([True, True, True, False])
    header["id"] = request_id if valid_id else choose([-1, -(2**63), "7", None, 1.5, DROP])
    if header["type"] == "act":
        header["deadline_ms"] = choose([DROP, DROP, 50.0, 5_000, *NUMBERS, "x", None, True])
    described, frames = _arrays(choose) if header["type"] == "act" else ([], [])
    if choose([True, False, False, False]):
        described, frames = _arrays(choose)  # arrays on a request that takes none, or a second act set
    header["arrays"] = described if choose([True, True, True, False]) else choose([{}, "x", [1], DROP])
    if choose([False, False, False, True]):
        header[5] = "a non-string key"
    if header["type"] == "hello" and choose([True, False]):
        header["spec"] = choose(["{}", "not json", 3, state_spec().to_json()])
    packed = msgpack.packb({k: v for k, v in header.items() if v is not DROP}, use_bin_type=True)
    readable_id = request_id if valid_id else None
    return [packed, *frames], readable_id


def _exchange(peer: Any, batch: list[tuple[list[bytes], int | None]]) -> None:
    """Send a batch at once; every request must get exactly one reply, with its id where it had one."""
    for frames, _ in batch:
        peer.send(frames)
    expected = Counter(request_id for _, request_id in batch)
    got: Counter[int | None] = Counter()
    while sum(got.values()) < len(batch):
        frames = peer.receive_raw(WAIT_S)
        assert frames is not None, f"{len(batch) - sum(got.values())} of {len(batch)} requests got no reply"
        reply = protocol.decode(frames, 1 << 24, protocol.REPLY_TYPES)
        got[reply.request_id] += 1
    assert got == expected
    assert peer.receive_raw(0.05) is None, "a request got more than one reply"


def _batches(draw: Any) -> list[tuple[list[bytes], int | None]]:
    size = draw(st.integers(1, 12))
    return [build(lambda options: draw(st.sampled_from(list(options))), 1000 + i) for i in range(size)]


def test_generated_requests_get_exactly_one_reply_each_with_their_id(peer_factory):
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)

        @settings(max_examples=60, deadline=None, derandomize=True)
        @given(st.data())
        def check(data: Any) -> None:
            _exchange(peer, data.draw(st.composite(lambda draw: _batches(draw))()))

        check()


def test_a_fixed_seed_fuzz_of_thousands_of_requests_gets_one_reply_each(peer_factory):
    rng = random.Random(0)
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        for batch in range(100):
            _exchange(peer, [build(rng.choice, batch * 100 + i) for i in range(rng.randint(1, 50))])


def test_an_infinite_t_after_a_finite_one_is_answered(peer_factory):
    """The field report: ``t = +inf`` on a connection that sent a finite ``t`` before got no reply at all."""
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        for request_id, t in ((1, 100.0), (2, math.inf), (3, -math.inf), (4, math.nan), (5, 101.0)):
            frames = protocol.encode(protocol.Message("act", request_id, t, {"state": np.zeros(3, np.float32)}))
            peer.send(list(frames))
            reply = peer.receive()
            assert (reply.type, reply.request_id) == ("act", request_id), reply.fields


def test_an_empty_first_frame_is_a_delimiter_and_an_empty_message_is_malformed(peer_factory):
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        peer.send([b"", *protocol.encode(protocol.Message("ping", 9, 1.0))])
        frames = peer.receive_raw(WAIT_S)
        assert frames is not None and frames[0] == b""  # the delimiter comes back
        assert protocol.decode(frames[1:], 1 << 20).request_id == 9
        peer.send([b""])
        reply = peer.receive()
        assert (reply.type, reply.request_id, reply.fields["code"]) == ("error", None, "malformed")
