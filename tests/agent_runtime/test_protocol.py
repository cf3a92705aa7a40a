"""The wire protocol: round trips (property-based), zero-copy decoding, and every malformed input's code."""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agent_runtime import protocol
from agent_runtime.protocol import Code, Message, ProtocolError
from tests.agent_runtime.conftest import DROP, header, nested, pixel_spec, state_spec

CAP = 1 << 20
_INPROC_IDS = itertools.count()

names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
arrays = st.sampled_from(protocol.DTYPES).flatmap(
    lambda dtype: hnp.arrays(np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
)
field_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
messages = st.builds(
    Message,
    type=st.sampled_from(protocol.REPLY_TYPES),
    request_id=st.integers(0, 2**64 - 1),
    client_time_s=st.floats(allow_nan=False),
    arrays=st.dictionaries(names, arrays, max_size=protocol.MAX_ARRAYS),
    fields=st.dictionaries(
        names.filter(lambda n: n not in ("v", "type", "id", "t", "arrays")), field_values, max_size=4
    ),
)


def assert_same(a: Message, b: Message) -> None:
    assert (a.type, a.request_id, a.fields) == (b.type, b.request_id, b.fields)
    assert a.client_time_s == b.client_time_s or (np.isinf(a.client_time_s) and a.client_time_s == b.client_time_s)
    assert list(a.arrays) == list(b.arrays)
    for name, value in a.arrays.items():
        got = b.arrays[name]
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got, value)  # NaN equals NaN here


# -- round trips ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(messages)
def test_round_trip(message):
    frames = [bytes(f) for f in protocol.encode(message)]
    assert_same(message, protocol.decode(frames, CAP))


@settings(max_examples=25, deadline=None)
@given(messages)
def test_round_trip_through_zeromq_without_copies(message):
    context: zmq.Context[Any] = zmq.Context.instance()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    # A closed socket releases its inproc name asynchronously, so each example binds a fresh one.
    endpoint = f"inproc://protocol-round-trip-{next(_INPROC_IDS)}"
    try:
        a.bind(endpoint)
        b.connect(endpoint)
        a.send_multipart(protocol.encode(message), copy=False)
        assert b.poll(5000), "message did not arrive"
        received = b.recv_multipart(copy=False)
        decoded = protocol.decode(received, CAP)
    finally:
        a.close(linger=0)
        b.close(linger=0)
    assert_same(message, decoded)


def test_decoded_arrays_are_views_of_the_received_frames():
    obs = np.arange(12, dtype=np.float32).reshape(3, 4)
    frames = [bytes(f) for f in protocol.encode(Message("act", 1, 0.0, {"x": obs}))]
    decoded = protocol.decode(frames, CAP).arrays["x"]
    assert not decoded.flags.owndata and not decoded.flags.writeable  # a view of the immutable frame
    assert np.shares_memory(decoded, np.frombuffer(frames[1], dtype=np.uint8))


def test_encode_sends_contiguous_little_endian_arrays_without_copying():
    obs = np.arange(6, dtype=np.float32)
    frame = protocol.encode(Message("act", 1, 0.0, {"x": obs}))[1]
    assert np.shares_memory(np.frombuffer(frame, dtype=np.float32), obs)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.arange(6, dtype=np.float32).reshape(2, 3).T, id="transposed"),
        pytest.param(np.arange(6, dtype=">f4"), id="big-endian"),
        pytest.param(np.arange(12, dtype=np.int16)[::2], id="strided"),
    ],
)
def test_non_contiguous_and_big_endian_arrays_arrive_as_the_same_values(array):
    decoded = protocol.decode([bytes(f) for f in protocol.encode(Message("act", 1, 0.0, {"x": array}))], CAP)
    np.testing.assert_array_equal(decoded.arrays["x"], array)
    assert decoded.arrays["x"].dtype == array.dtype.newbyteorder("<")


def test_error_reply_may_have_no_id():
    reply = protocol.make_error(Code.MALFORMED, "bad", None, 0.0)
    back = protocol.decode([bytes(f) for f in protocol.encode(reply)], CAP)
    assert back.request_id is None and back.error == (Code.MALFORMED, "bad")
    assert Message("act", 1, 0.0).error is None


def test_encode_refuses_reserved_fields_and_unsupported_dtypes():
    with pytest.raises(ValueError, match="reserved"):
        protocol.encode(Message("ping", 1, 0.0, fields={"id": 3}))
    with pytest.raises(ValueError, match="complex64"):
        protocol.encode(Message("act", 1, 0.0, {"z": np.zeros(2, np.complex64)}))


# -- malformed input: each rule has its code ----------------------------------------------------


def frames_for(array_meta: list[Any], payloads: list[bytes], **fields: Any) -> list[bytes]:
    return [header(arrays=array_meta, **fields), *payloads]


F32x3 = {"name": "state", "dtype": "float32", "shape": [3]}

MALFORMED: list[Any] = [
    ("empty message", [], Code.MALFORMED),
    ("not msgpack", [b"\xc1\xc1\xc1"], Code.MALFORMED),
    ("truncated msgpack", [header()[:-3]], Code.MALFORMED),
    ("not a map", [msgpack.packb([1, 2, 3])], Code.MALFORMED),
    ("integer keys", [msgpack.packb({1: 2}, strict_types=False)], Code.MALFORMED),
    ("no version", [header(v=DROP)], Code.MALFORMED),
    ("string version", [header(v="1")], Code.MALFORMED),
    ("future version", [header(v=2)], Code.BAD_VERSION),
    ("no type", [header(type=DROP)], Code.MALFORMED),
    ("numeric type", [header(type=3)], Code.MALFORMED),
    ("unknown type", [header(type="shutdown")], Code.UNKNOWN_TYPE),
    ("no id", [header(id=DROP)], Code.MALFORMED),
    ("negative id", [header(id=-1)], Code.MALFORMED),
    ("float id", [header(id=7.0)], Code.MALFORMED),
    ("string id", [header(id="7")], Code.MALFORMED),
    ("no timestamp", [header(t=DROP)], Code.MALFORMED),
    ("boolean timestamp", [header(t=True)], Code.MALFORMED),
    ("arrays not a list", [header(arrays={"a": 1})], Code.MALFORMED),
    ("array entry not a map", frames_for([["state", "float32", [3]]], [b"\0" * 12]), Code.MALFORMED),
    ("array without name", frames_for([{"dtype": "float32", "shape": [3]}], [b"\0" * 12]), Code.MALFORMED),
    ("array named twice", frames_for([F32x3, F32x3], [b"\0" * 12] * 2), Code.MALFORMED),
    ("complex dtype", frames_for([{**F32x3, "dtype": "complex64"}], [b"\0" * 24]), Code.BAD_DTYPE),
    ("object dtype", frames_for([{**F32x3, "dtype": "object"}], [b"\0" * 24]), Code.BAD_DTYPE),
    ("numpy byte-order dtype", frames_for([{**F32x3, "dtype": ">f4"}], [b"\0" * 12]), Code.BAD_DTYPE),
    ("negative dimension", frames_for([{**F32x3, "shape": [-3]}], [b""]), Code.MALFORMED),
    ("float dimension", frames_for([{**F32x3, "shape": [3.0]}], [b"\0" * 12]), Code.MALFORMED),
    ("nine dimensions", frames_for([{**F32x3, "shape": [1] * 9}], [b"\0" * 4]), Code.MALFORMED),
    ("frame missing", frames_for([F32x3], []), Code.MALFORMED),
    ("extra frame", frames_for([F32x3], [b"\0" * 12, b"\0" * 12]), Code.MALFORMED),
    ("short frame", frames_for([F32x3], [b"\0" * 11]), Code.MALFORMED),
    ("long frame", frames_for([F32x3], [b"\0" * 16]), Code.MALFORMED),
    ("too many arrays", frames_for([{**F32x3, "name": f"a{i}"} for i in range(17)], [b"\0" * 12] * 17), Code.TOO_LARGE),
    ("header too large", [header(pad="x" * protocol.MAX_HEADER_BYTES)], Code.TOO_LARGE),
    ("message too large", frames_for([{**F32x3, "shape": [CAP]}], [b"\0" * 4 * CAP]), Code.TOO_LARGE),
    # A shape that claims more bytes than the cap, sent with a small frame.
    ("huge shape", frames_for([{**F32x3, "shape": [2**39] * 8}], [b"\0" * 12]), Code.TOO_LARGE),
    # Far more frames than arrays a message may carry: refused before any frame is looked at.
    ("many frames", [header(), *[b""] * 100_000], Code.TOO_LARGE),
    # Nested values are a few bytes per level on the wire, but repr() of one overflows the stack.
    ("id nested 1000 deep", [header(id=nested(1000))], Code.MALFORMED),
    ("timestamp nested 1000 deep", [header(t=nested(1000))], Code.MALFORMED),
    ("type nested 1000 deep", [header(type=nested(1000))], Code.MALFORMED),
    ("dtype nested 1000 deep", frames_for([{**F32x3, "dtype": nested(1000)}], [b"\0" * 12]), Code.BAD_DTYPE),
    ("shape nested 1000 deep", frames_for([{**F32x3, "shape": nested(1000)}], [b"\0" * 12]), Code.MALFORMED),
]


@pytest.mark.parametrize(("frames", "code"), [pytest.param(f, c, id=i) for i, f, c in MALFORMED])
def test_malformed_messages_raise_their_code(frames, code):
    with pytest.raises(ProtocolError) as info:
        protocol.decode(frames, CAP, protocol.REQUEST_TYPES)
    assert info.value.code == code
    assert code in protocol.ERROR_CODES


def test_errors_echo_the_id_and_timestamp_when_they_can_be_read():
    with pytest.raises(ProtocolError) as info:
        protocol.decode([header(v=2, id=42, t=3.25)], CAP)
    assert (info.value.request_id, info.value.client_time_s) == (42, 3.25)
    assert "protocol version 2 is not supported; this side speaks 1" in str(info.value)
    reply = protocol.error_reply(info.value)
    assert (reply.type, reply.request_id, reply.client_time_s) == ("error", 42, 3.25)
    with pytest.raises(ProtocolError) as info:
        protocol.decode([header(id="x", t="y")], CAP)
    assert (info.value.request_id, info.value.client_time_s) == (None, 0.0)


def test_error_messages_quote_untrusted_values_only_in_short_excerpts():
    with pytest.raises(ProtocolError) as info:
        protocol.decode([header(type="x" * 60_000)], CAP, protocol.REQUEST_TYPES)
    assert info.value.code == Code.UNKNOWN_TYPE and "'xxx" in info.value.message
    assert len(info.value.message) < 200
    with pytest.raises(ProtocolError) as info:
        protocol.decode([header(id=nested(1000))], CAP)
    assert info.value.message.startswith("header 'id' must be an integer in [0, 2**64), got [[[")
    assert len(info.value.message) < 200


def test_a_nested_deadline_is_malformed():
    with pytest.raises(ProtocolError) as info:
        protocol.act_deadline_s(Message("act", 3, 0.0, fields={"deadline_ms": nested(1000)}))
    assert info.value.code == Code.MALFORMED and info.value.request_id == 3


def test_an_error_reply_never_outgrows_the_header_cap():
    reply = protocol.make_error(Code.MALFORMED, "y" * protocol.MAX_HEADER_BYTES, 1, 0.0)
    header_frame = protocol.encode(reply)[0]
    assert len(header_frame) < protocol.MAX_HEADER_BYTES
    assert protocol.decode([header_frame], CAP).error == (Code.MALFORMED, reply.fields["message"])
    assert reply.fields["message"].endswith("... (65536 characters in all)")
    assert len(reply.fields["message"]) == protocol.MAX_ERROR_MESSAGE_CHARS  # the documented cap, note included


@pytest.mark.parametrize("length", [0, 1, 255, 256, 257, 300, 10_000])
@pytest.mark.parametrize("limit", [8, 64, 256, 2048])
def test_clipped_text_never_exceeds_its_cap(length: int, limit: int):
    text = "x" * length
    clipped = protocol.clip(text, limit)
    assert len(clipped) <= limit
    assert clipped == text if length <= limit else clipped.startswith("x")


def test_a_hostile_error_reply_reads_as_short_text():
    reply = Message("error", 1, 0.0, fields={"code": nested(1000), "message": nested(1000)})
    code, message = reply.error  # type: ignore[misc]
    assert code.startswith("[[[") and len(code) < 100 and message.startswith("[[[")


def test_frame_size_error_names_the_array_and_both_sizes():
    with pytest.raises(ProtocolError, match=r"array 'state' \(float32 \(3,\)\) needs 12 bytes; its frame has 11"):
        protocol.decode(frames_for([F32x3], [b"\0" * 11]), CAP)


# -- fuzz: hostile bytes raise ProtocolError and nothing else --------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_random_frames_raise_only_protocol_errors(frames):
    try:
        protocol.decode(frames, CAP)
    except ProtocolError as exc:
        assert exc.code in protocol.ERROR_CODES


header_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
hostile_headers = st.fixed_dictionaries(
    {},
    optional={
        "v": st.one_of(st.just(1), header_values),
        "type": st.one_of(st.sampled_from(protocol.REPLY_TYPES), header_values),
        "id": st.one_of(st.integers(0, 10), header_values),
        "t": header_values,
        "arrays": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.one_of(names, header_values),
                        "dtype": st.one_of(st.sampled_from(protocol.DTYPES), header_values),
                        "shape": st.one_of(st.lists(st.integers(-2, 4), max_size=3), header_values),
                    },
                ),
                max_size=3,
            ),
            header_values,
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(hostile_headers, st.lists(st.binary(max_size=48), max_size=3))
def test_hostile_headers_raise_only_protocol_errors(fields, payloads):
    try:
        message = protocol.decode([msgpack.packb(fields, use_bin_type=True), *payloads], CAP)
    except ProtocolError as exc:
        assert exc.code in protocol.ERROR_CODES
    else:
        assert len(message.arrays) == len(payloads)


# -- check_observation: an act request against the spec -------------------------------------------


def observation_error(spec, arrays) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        protocol.check_observation(spec, arrays, Message("act", 9, 1.0))
    assert (info.value.request_id, info.value.client_time_s) == (9, 1.0)
    return info.value


def valid_pixels() -> dict[str, np.ndarray]:
    return {"pixels": np.zeros((8, 8, 6), np.uint8), "proprio": np.zeros(2, np.float32)}


def test_valid_observation_passes():
    protocol.check_observation(pixel_spec(), valid_pixels(), Message("act", 1, 0.0))


def test_missing_array():
    arrays = valid_pixels()
    del arrays["proprio"]
    err = observation_error(pixel_spec(), arrays)
    assert err.code == Code.MISSING_ARRAY and err.message == "observation 'proprio' (float32 (2,)) is missing"


def test_unexpected_array():
    err = observation_error(pixel_spec(), {**valid_pixels(), "depth": np.zeros(3, np.float32)})
    assert err.code == Code.UNEXPECTED_ARRAY and "'depth'" in err.message and "pixels, proprio" in err.message


def test_a_request_with_two_faults_gets_the_code_the_protocol_document_lists_first():
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    found = re.search(
        r"checks an act request in this order.*?first\s*`(\w+)`.*?entry by entry, in the spec's order,\s*"
        r"`(\w+)`, `(\w+)`, `(\w+)`; and only when every entry passes those, `(\w+)`",
        doc,
        re.DOTALL,
    )
    assert found, "docs/protocol.md no longer states the order of the act checks"
    assert found.groups() == (
        Code.UNEXPECTED_ARRAY, Code.MISSING_ARRAY, Code.BAD_DTYPE, Code.BAD_SHAPE, Code.NON_FINITE
    )  # fmt: skip
    arrays = {"pixels": np.zeros((8, 8, 6), np.uint8), "depth": np.zeros(3, np.float32)}  # no proprio
    assert observation_error(pixel_spec(), arrays).code == Code.UNEXPECTED_ARRAY
    # The document's example: entry 0 of the wrong dtype and entry 1 missing is bad_dtype.
    assert observation_error(pixel_spec(), {"pixels": np.zeros((8, 8, 6), np.float32)}).code == Code.BAD_DTYPE
    # And its second: a NaN in entry 0 with entry 1 of the wrong shape is bad_shape.
    spec = dataclasses.replace(pixel_spec(), observations=pixel_spec().observations[::-1])
    arrays = {"proprio": np.array([np.nan, 0.0], np.float32), "pixels": np.zeros((1, 8, 8, 6), np.uint8)}
    assert observation_error(spec, arrays).code == Code.BAD_SHAPE


def test_wrong_dtype():
    err = observation_error(pixel_spec(), {**valid_pixels(), "pixels": np.zeros((8, 8, 6), np.float32)})
    assert err.code == Code.BAD_DTYPE
    assert err.message == "observation 'pixels' has dtype float32; the policy expects uint8"


def test_wrong_shape_says_one_sample():
    err = observation_error(pixel_spec(), {**valid_pixels(), "pixels": np.zeros((1, 8, 8, 6), np.uint8)})
    assert err.code == Code.BAD_SHAPE
    assert err.message == (
        "observation 'pixels' has shape (1, 8, 8, 6); the policy expects (8, 8, 6) (one sample, no batch axis)"
    )


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite(value):
    obs = np.zeros(3, np.float32)
    obs[2] = value
    err = observation_error(state_spec(), {"state": obs})
    assert err.code == Code.NON_FINITE and err.message.endswith("(first at index (2,))")


@settings(max_examples=200, deadline=None)
@given(header_values)
def test_an_excerpt_of_any_header_value_is_short(value):
    assert len(protocol.excerpt(value)) <= 120
    assert len(protocol.excerpt([value] * 50)) <= 120
