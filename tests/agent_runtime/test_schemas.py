"""docs/schemas: the policy spec's and the message headers' JSON Schemas agree with what the code writes and accepts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
import numpy as np
import pytest

from agent_runtime import protocol
from agent_runtime.protocol import Message
from agent_runtime.spec import PolicySpec, SpecError
from tests.agent_runtime.conftest import FakePolicy, pixel_spec, running_server, state_obs, state_spec

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def _validator(name: str, ref: str | None = None) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    if ref is not None:
        schema = {**schema, "oneOf": [{"$ref": ref}]}
    return jsonschema.Draft202012Validator(schema)


SPEC = _validator("policy_spec.schema.json")
REQUEST = _validator("message_header.schema.json", "#/$defs/request")
REPLY = _validator("message_header.schema.json", "#/$defs/reply")


def _accepted_by_code(data: Any) -> bool:
    try:
        PolicySpec.from_dict(data)
    except SpecError:
        return False
    return True


def test_specs_the_code_writes_match_the_schema():
    for spec in (state_spec(), pixel_spec(), state_spec().with_provenance(task_preset_sha256="ab" * 32)):
        SPEC.validate(json.loads(spec.to_json()))


def _set(path: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(data)
        *parents, last = path.split(".")
        target: Any = out
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return out

    return change


_DELETE = object()
# Each change of a valid spec, and whether the code (and so the schema) must still accept it.
CHANGES = [
    ("format_version", 2, False),
    ("format_version", _DELETE, False),
    ("observations", [], False),
    ("observations.0.dtype", "float64", False),
    ("observations.0.layout", "grid", False),
    ("observations.0.name", "9state", False),
    ("observations.0.history", 0, False),
    # Not here: 1.0 for an integer field. The reader refuses it; JSON Schema's integer includes it
    # (docs/protocol.md, section 10, says so).
    ("observations.0.shape", [0], False),
    ("observations.0.shape", "3", False),
    ("observations.0.description", None, False),
    ("observations.0.extra", 1, False),
    ("observations.0.quantities.0.name", "", False),
    ("observations.0.quantities.0.unit", "", True),
    ("action.quantities", [], False),
    ("action.low", "x", False),
    ("action.high.0", "1", False),
    ("control_period_s", 0, False),
    ("control_period_s", "0.04", False),
    ("action_repeat", 0, False),
    ("action_repeat", True, False),
    ("provenance.encoder", 3, False),
    ("provenance.policy", None, True),
    ("provenance.task_preset_sha256", _DELETE, True),
    ("provenance.task_preset_sha256", "abc", True),
    ("provenance.task_preset_sha256", None, True),
    ("action_chunk", None, True),  # the same as absent
    ("action_chunk", {"horizon": 4, "period_s": 0.02}, True),
    ("action_chunk", {"horizon": 1, "period_s": 0.02}, False),
    ("action_chunk", {"horizon": 4}, False),
    ("provenance.unknown", "x", False),
    ("provenance.env_id", _DELETE, False),
    ("unknown", 1, False),
]


@pytest.mark.parametrize(("path", "value", "accepted"), CHANGES)
def test_the_schema_and_the_code_accept_and_refuse_the_same_specs(path, value, accepted):
    base = json.loads(state_spec().with_provenance(task_preset_sha256="ab" * 32).to_json())
    changed = _set(path, value)(base)
    assert _accepted_by_code(changed) is accepted
    assert SPEC.is_valid(changed) is accepted, list(SPEC.iter_errors(changed))


def _header(frames: list[Any]) -> dict[str, Any]:
    return dict(msgpack.unpackb(bytes(frames[0]), raw=False))


def test_the_requests_a_client_writes_match_the_schema():
    spec = state_spec()
    for message in (
        Message("hello", 1, 10.0, fields={"spec": spec.to_json()}),
        Message("hello", 2, 10.0),
        Message("act", 3, 10.5, state_obs(0.5), {"deadline_ms": 20.0}),
        Message("act", 4, 11.0, state_obs(0.5)),
        Message("ping", 5, 11.0),
        Message("stats", 2**64 - 1, 11.0),
    ):
        REQUEST.validate(_header(list(protocol.encode(message))))


def test_every_kind_of_reply_the_server_sends_matches_the_schema(peer_factory):
    wrong = state_spec(dim=4)
    with running_server(FakePolicy(state_spec())) as server:
        peer = peer_factory(server.endpoint)
        requests = [
            Message("hello", 1, 1.0, fields={"spec": state_spec().to_json()}),
            Message("hello", 2, 1.0, fields={"spec": wrong.to_json()}),  # spec_mismatch with differences
            Message("act", 3, 1.0, state_obs(0.25), {"deadline_ms": 1000.0}),
            Message("act", 4, 1.0, {"state": np.zeros(5, np.float32)}),  # bad_shape
            Message("ping", 5, 1.0),
            Message("stats", 6, 1.0),
        ]
        kinds = set()
        for request in requests:
            peer.send(list(protocol.encode(request)))
            frames = peer.receive_raw(5.0)
            assert frames is not None
            header = _header(frames)
            REPLY.validate(header)
            kinds.add((header["type"], header.get("code")))
        peer.send([msgpack.packb({"v": 1, 5: "x", "type": "ping"})])  # no id, a non-string key
        frames = peer.receive_raw(5.0)
        assert frames is not None
        REPLY.validate(_header(frames))
    assert {("hello", None), ("act", None), ("ping", None), ("stats", None)} <= kinds
    assert {("error", "spec_mismatch"), ("error", "bad_shape")} <= kinds
