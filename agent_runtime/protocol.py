"""The wire protocol between robot hosts and the policy server (specified in docs/protocol.md).

A message is a ZeroMQ multipart message: one msgpack header frame, then one raw frame per array.
The header names each array's dtype and shape, so arrays travel as their bytes (little-endian,
C order) and are read back with ``np.frombuffer`` on the received frame: no copy, and never pickle.

Everything decoded here is untrusted network input. :func:`decode` raises only
:class:`ProtocolError`, whose ``code`` is one of :data:`ERROR_CODES` and goes back to the sender in an
error reply. Error messages quote untrusted values only through :func:`excerpt`: ``repr`` of a list
nested a thousand deep (a few bytes per level on the wire) overflows the stack, and a 60 KB string
echoed back would not fit in the reply's header.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import numpy as np

from agent_runtime.spec import PolicySpec

PROTOCOL_VERSION = 1
"""Version of the header layout and message semantics; a server refuses any other with ``bad_version``."""

MAX_HEADER_BYTES = 64 * 1024
"""Largest header frame accepted. A hello header carries a policy spec (a few KiB)."""
MAX_ARRAYS = 16
"""Most arrays one message may carry."""
MAX_NDIM = 8
"""Most dimensions one array may have."""
MAX_ERROR_MESSAGE_CHARS = 2048
"""Longest error message sent; longer ones are cut (4 bytes a character at most: well under the header cap)."""

HELLO, ACT, PING, STATS, ERROR = "hello", "act", "ping", "stats", "error"
REQUEST_TYPES: tuple[str, ...] = (HELLO, ACT, PING, STATS)
"""Message types a client may send. A reply has its request's type, or ``error``."""
REPLY_TYPES: tuple[str, ...] = (*REQUEST_TYPES, ERROR)

DTYPES: tuple[str, ...] = (
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
)
"""Array dtypes the protocol can carry, by numpy name; all little-endian on the wire."""

_WIRE_DTYPES: dict[str, np.dtype[Any]] = {name: np.dtype(name).newbyteorder("<") for name in DTYPES}
"""Each carried dtype as its little-endian numpy dtype (built once: decode looks them up per array)."""
_LITTLE_ENDIAN_NAMES: dict[np.dtype[Any], str] = {dtype: name for name, dtype in _WIRE_DTYPES.items()}
"""Dtypes that go on the wire as they are (already little-endian), to their protocol name."""

_RESERVED = ("v", "type", "id", "t", "arrays")
_MAX_ID = 2**64


class Code:
    """Error codes of error replies. Stable strings: clients in any language match on them."""

    MALFORMED = "malformed"
    """The header is not a msgpack map with the required fields, or frames and header disagree."""
    BAD_VERSION = "bad_version"
    """The header's protocol version is not the server's."""
    UNKNOWN_TYPE = "unknown_type"
    """The message type is not one the receiver handles."""
    TOO_LARGE = "too_large"
    """The message (or its header) is larger than the receiver's cap."""
    MISSING_ARRAY = "missing_array"
    """An act request lacks an observation entry of the policy spec."""
    UNEXPECTED_ARRAY = "unexpected_array"
    """An act request carries an array the policy spec does not name."""
    BAD_DTYPE = "bad_dtype"
    """An array's dtype is not one the protocol carries, or not the one the spec states."""
    BAD_SHAPE = "bad_shape"
    """An array's shape is not the one the spec states."""
    NON_FINITE = "non_finite"
    """A float observation contains NaN or Inf."""
    SPEC_MISMATCH = "spec_mismatch"
    """A hello carried a robot spec that is incompatible with the served policy's."""
    DEADLINE_EXPIRED = "deadline_expired"
    """An act request's deadline would pass before its inference finished; it was not run."""
    POLICY_ERROR = "policy_error"
    """The inference backend failed or returned an action that is not finite or has the wrong shape."""


ERROR_CODES: tuple[str, ...] = tuple(v for k, v in vars(Code).items() if k.isupper())

_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel = 3
_EXCERPT.maxstring = 40
_EXCERPT.maxother = 40
_EXCERPT.maxlong = 40
for _limit in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_EXCERPT, _limit, 4)


_MAX_EXCERPT_CHARS = 120


def excerpt(value: Any) -> str:
    """A short ``repr`` of an untrusted value (at most 120 characters), safe for any nesting depth or size."""
    try:
        text = _EXCERPT.repr(value)
    except Exception:  # an exotic object whose repr fails; its type still tells the sender something
        return f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_EXCERPT_CHARS else text[: _MAX_EXCERPT_CHARS - 3] + "..."


def clip(text: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and a note of its full length.

    The result, note included, is never longer than ``limit``: the documented caps are hard.
    """
    if len(text) <= limit:
        return text
    note = f"... ({len(text)} characters in all)"
    if len(note) >= limit:
        return text[:limit]
    return text[: limit - len(note)] + note


def as_text(value: Any) -> str:
    """``value`` if it is a string, else its :func:`excerpt`; for reading text fields of untrusted messages."""
    return value if isinstance(value, str) else excerpt(value)


class ProtocolError(ValueError):
    """A message that breaks the protocol, with the error code and what the header echoes back.

    Attributes:
        code: one of :data:`ERROR_CODES`.
        request_id: the offending message's id, if it could be read; ``None`` otherwise.
        client_time_s: its client timestamp, if it could be read; ``0.0`` otherwise.
    """

    def __init__(self, code: str, message: str, request_id: int | None = None, client_time_s: float = 0.0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.client_time_s = client_time_s


@dataclass(frozen=True)
class Message:
    """One protocol message, request or reply.

    Attributes:
        type: ``hello``, ``act``, ``ping``, ``stats`` or (replies only) ``error``.
        request_id: the request's id (uint64), echoed by its reply; ``None`` only in an error reply to a
            message whose id could not be read.
        client_time_s: the client's timestamp (seconds, the client's own clock), echoed by the reply.
        arrays: named arrays, each sent as its own frame.
        fields: the other header fields, e.g. ``spec`` in a hello, ``code`` and ``message`` in an error.
    """

    type: str
    request_id: int | None
    client_time_s: float
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> tuple[str, str] | None:
        """``(code, message)`` of an error reply; ``None`` for any other message."""
        if self.type != ERROR:
            return None
        return as_text(self.fields.get("code", "")), as_text(self.fields.get("message", ""))


def error_reply(exc: ProtocolError) -> Message:
    """The error reply to a message that raised ``exc``."""
    return make_error(exc.code, exc.message, exc.request_id, exc.client_time_s)


def make_error(code: str, message: str, request_id: int | None, client_time_s: float, **fields: Any) -> Message:
    """An error reply with ``code`` and a message that tells the sender what to fix (cut by :func:`clip`)."""
    return Message(ERROR, request_id, client_time_s, fields={"code": code, "message": clip(message), **fields})


def encode(message: Message) -> list[bytes | memoryview]:
    """The frames of ``message``: the msgpack header, then each array's bytes (contiguous, little-endian).

    Array frames are memoryviews of the arrays themselves when they are already contiguous and
    little-endian (no copy); send them with ``agent_runtime.frames.send_frames``.

    Raises:
        ValueError: an array has a dtype the protocol cannot carry, or ``fields`` uses a reserved key.
    """
    reserved = [k for k in message.fields if k in _RESERVED]
    if reserved:
        raise ValueError(f"header fields {reserved} are reserved; use other names")
    if len(message.arrays) > MAX_ARRAYS:
        raise ValueError(f"a message carries at most {MAX_ARRAYS} arrays, got {len(message.arrays)}")
    described: list[dict[str, Any]] = []
    frames: list[bytes | memoryview] = []
    for name, value in message.arrays.items():
        array = value if type(value) is np.ndarray else np.asarray(value)
        wire_name = _LITTLE_ENDIAN_NAMES.get(array.dtype)
        if wire_name is None:  # big-endian, native-order duplicates, or a dtype the protocol cannot carry
            if array.dtype.name not in DTYPES:
                raise ValueError(f"array {name!r} has dtype {array.dtype}; the protocol carries {', '.join(DTYPES)}")
            wire_name = array.dtype.name
            array = array.astype(_WIRE_DTYPES[wire_name])
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array) if array.ndim else array.copy()  # keeps 0-d arrays 0-d
        described.append({"name": name, "dtype": wire_name, "shape": list(array.shape)})
        frames.append(array.data)
    header = {
        "v": PROTOCOL_VERSION,
        "type": message.type,
        "id": message.request_id,
        "t": float(message.client_time_s),
        "arrays": described,
        **message.fields,
    }
    return [msgpack.packb(header, use_bin_type=True), *frames]


def decode(frames: Sequence[Any], max_message_bytes: int, types: Collection[str] = REPLY_TYPES) -> Message:
    """Parse received frames into a :class:`Message`, checking everything against the protocol.

    Args:
        frames: the header frame then the array frames (``bytes`` or ``zmq.Frame``; anything with the
            buffer protocol). Arrays are views of these buffers: no copy is made.
        max_message_bytes: cap on the total size of all frames.
        types: message types the receiver accepts; others raise ``unknown_type``.

    Raises:
        ProtocolError: for anything that is not a well-formed message; its ``code`` says which rule broke.
    """
    if not frames:
        raise ProtocolError(Code.MALFORMED, "empty message: expected a header frame")
    head = memoryview(frames[0])
    if head.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(Code.TOO_LARGE, f"header is {head.nbytes} bytes; the cap is {MAX_HEADER_BYTES}")
    header = _unpack(head)
    request_id, t = header.get("id"), header.get("t")
    echo_id, echo_t = _echo(header)

    def fail(code: str, text: str) -> ProtocolError:
        return ProtocolError(code, text, echo_id, echo_t)

    if not all(isinstance(k, str) for k in header):  # read, so the error can carry the id and t it has
        raise fail(Code.MALFORMED, "header must be a msgpack map with string keys")

    if len(frames) > MAX_ARRAYS + 1:  # checked before a view of each frame is made
        raise fail(Code.TOO_LARGE, f"message has {len(frames) - 1} array frames; at most {MAX_ARRAYS} are allowed")
    views = [head, *(memoryview(f) for f in frames[1:])]
    total = sum(v.nbytes for v in views)
    if total > max_message_bytes:
        raise fail(Code.TOO_LARGE, f"message is {total} bytes; the cap is {max_message_bytes}")

    version = header.get("v")
    if type(version) is not int:
        raise fail(Code.MALFORMED, "header has no integer protocol version 'v'")
    if version != PROTOCOL_VERSION:
        raise fail(
            Code.BAD_VERSION, f"protocol version {version} is not supported; this side speaks {PROTOCOL_VERSION}"
        )
    kind = header.get("type")
    if not isinstance(kind, str):
        raise fail(Code.MALFORMED, "header has no string message 'type'")
    if kind not in types:
        raise fail(Code.UNKNOWN_TYPE, f"unknown message type {excerpt(kind)}; expected one of {', '.join(types)}")
    if echo_id is None and not (kind == ERROR and request_id is None):
        raise fail(Code.MALFORMED, f"header 'id' must be an integer in [0, 2**64), got {excerpt(request_id)}")
    if "t" not in header or isinstance(t, bool) or not isinstance(t, (int, float)):
        raise fail(Code.MALFORMED, f"header 't' (client timestamp, seconds) must be a number, got {excerpt(t)}")
    described = _describe_arrays(header.get("arrays", []), fail)
    if len(described) != len(views) - 1:
        raise fail(
            Code.MALFORMED,
            f"header describes {len(described)} arrays but the message has {len(views) - 1} array frames",
        )
    arrays: dict[str, np.ndarray] = {}
    for (name, dtype, shape), view in zip(described, views[1:], strict=True):
        expected = math.prod(shape) * dtype.itemsize
        if expected > max_message_bytes:
            raise fail(
                Code.TOO_LARGE,
                f"array {name!r} ({dtype.name} {tuple(shape)}) needs {expected} bytes; the cap is {max_message_bytes}",
            )
        if view.nbytes != expected:
            raise fail(
                Code.MALFORMED,
                f"array {name!r} ({dtype.name} {tuple(shape)}) needs {expected} bytes; its frame has {view.nbytes}",
            )
        arrays[name] = np.frombuffer(view, dtype=dtype).reshape(shape)
    fields = {k: v for k, v in header.items() if k not in _RESERVED}
    return Message(kind, echo_id, echo_t, arrays, fields)


class Peek(NamedTuple):
    """What a forwarder reads of a header without checking the message: see :func:`peek`."""

    type: str | None
    """The header's ``type`` if it is a string, else None."""
    request_id: int | None
    """The id a reply echoes (None where it is not a valid id)."""
    client_time_s: float
    """The ``t`` a reply echoes (0.0 where it is not a number)."""
    header: dict[str, Any]
    """The whole header map; empty where the frame is not a msgpack map."""


def peek(frame: Any) -> Peek:
    """Read a header frame's type and the id and ``t`` a reply to it echoes, never raising.

    For a process that forwards messages (the ``serve --workers`` broker) and must know which reply
    answers which request without judging the request: the echoed values are exactly those that
    :func:`decode` puts in the error it raises, so a reply to any readable header matches its peek.
    """
    view = memoryview(frame)
    if view.nbytes > MAX_HEADER_BYTES:
        return Peek(None, None, 0.0, {})
    try:
        header = _unpack(view)
    except ProtocolError:
        return Peek(None, None, 0.0, {})
    kind = header.get("type")
    return Peek(kind if isinstance(kind, str) else None, *_echo(header), header)


def _echo(header: Mapping[Any, Any]) -> tuple[int | None, float]:
    """The id and ``t`` a reply to ``header`` carries: each as sent where valid, else None and 0.0."""
    request_id, t = header.get("id"), header.get("t")
    echo_id = request_id if type(request_id) is int and 0 <= request_id < _MAX_ID else None
    echo_t = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.0
    return echo_id, echo_t


def _unpack(view: memoryview) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(view, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on hostile input; all mean the same
        raise ProtocolError(Code.MALFORMED, f"header is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError(Code.MALFORMED, "header must be a msgpack map with string keys")
    return header


def _describe_arrays(value: Any, fail: Any) -> list[tuple[str, np.dtype[Any], list[int]]]:
    if not isinstance(value, list):
        raise fail(Code.MALFORMED, "header 'arrays' must be a list of {name, dtype, shape} maps")
    if len(value) > MAX_ARRAYS:
        raise fail(Code.TOO_LARGE, f"message describes {len(value)} arrays; at most {MAX_ARRAYS} are allowed")
    out: list[tuple[str, np.dtype[Any], list[int]]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise fail(Code.MALFORMED, f"header 'arrays'[{i}] must be a map with name, dtype and shape")
        name, dtype, shape = item.get("name"), item.get("dtype"), item.get("shape")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise fail(Code.MALFORMED, f"header 'arrays'[{i}].name must be a non-empty string")
        if name in seen:
            raise fail(Code.MALFORMED, f"array {name!r} is described twice")
        seen.add(name)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise fail(
                Code.BAD_DTYPE, f"array {name!r} has dtype {excerpt(dtype)}; the protocol carries {', '.join(DTYPES)}"
            )
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(type(d) is int and 0 <= d < 2**40 for d in shape)
        ):
            raise fail(
                Code.MALFORMED, f"array {name!r} shape must be a list of at most {MAX_NDIM} non-negative integers"
            )
        out.append((name, _WIRE_DTYPES[dtype], shape))
    return out


def act_deadline_s(request: Message) -> float:
    """An act request's ``deadline_ms`` in seconds; ``inf`` when it has none.

    Raises:
        ProtocolError: ``malformed`` if ``deadline_ms`` is not a positive number.
    """
    value = request.fields.get("deadline_ms")
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ProtocolError(
            Code.MALFORMED,
            f"'deadline_ms' must be a positive number of milliseconds, got {excerpt(value)}",
            request.request_id,
            request.client_time_s,
        )
    return float(value) / 1e3


def check_observation(spec: PolicySpec, arrays: Mapping[str, np.ndarray], request: Message) -> None:
    """Check one act request's arrays against the policy spec (one sample each, no batch axis).

    Raises:
        ProtocolError: ``missing_array``, ``unexpected_array``, ``bad_dtype``, ``bad_shape`` or
            ``non_finite``, with a message that names the entry and what the spec expects.
    """

    def fail(code: str, text: str) -> ProtocolError:
        return ProtocolError(code, text, request.request_id, request.client_time_s)

    expected = ", ".join(spec.observation_names)
    for name in arrays:
        if name not in spec.observation_names:
            raise fail(
                Code.UNEXPECTED_ARRAY, f"array {name!r} is not an observation of the policy; it takes {expected}"
            )
    for entry in spec.observations:
        value = arrays.get(entry.name)
        if value is None:
            raise fail(Code.MISSING_ARRAY, f"observation {entry.name!r} ({entry.dtype} {entry.shape}) is missing")
        if value.dtype != entry.numpy_dtype:
            raise fail(
                Code.BAD_DTYPE, f"observation {entry.name!r} has dtype {value.dtype}; the policy expects {entry.dtype}"
            )
        if value.shape != entry.shape:
            raise fail(
                Code.BAD_SHAPE,
                f"observation {entry.name!r} has shape {value.shape}; the policy expects {entry.shape} "
                "(one sample, no batch axis)",
            )
    # Values last: a reading with NaN (transient) never hides a later entry's wrong dtype or shape (a bug).
    for entry in spec.observations:
        value = arrays[entry.name]
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise fail(Code.NON_FINITE, f"observation {entry.name!r} contains NaN or Inf (first at index {index})")
