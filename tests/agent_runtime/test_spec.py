"""Tests for the policy spec: serialization, hashing, validation, observation and compatibility checks.

Pure numpy and the standard library: no torch, gymnasium or MuJoCo. Every spec is built by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.spec import (
    SPEC_FORMAT_VERSION,
    ActionSpec,
    NonFiniteObservationError,
    ObservationError,
    ObservationSpec,
    PolicySpec,
    Provenance,
    Quantity,
    SpecError,
    SpecMismatchError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# The SHA-256 of pixel_spec()'s canonical JSON, computed once and pinned. If this test fails, the
# canonical JSON of a spec changed (a field, a key name, number formatting, ...): hashes already stored
# in exported models and compared at connect no longer match, so SPEC_FORMAT_VERSION must be bumped in
# the same change, and this literal updated.
GOLDEN_HASH = "98dcdb9431d5282b8ef54a5942a25927192187e546802ba3ac13b3f33ddbd6a2"

# Same idea for the interface hash (provenance and descriptions left out).
GOLDEN_INTERFACE_HASH = "78a2636734cbad9632889e3f686475ace86ddc5d738b0524e7e4dafa6e33ed46"


# -- builders -----------------------------------------------------------------------------------


def pixels_entry(**changes: Any) -> ObservationSpec:
    entry = ObservationSpec(name="pixels", dtype="uint8", shape=(84, 84, 9), layout="image", history=3)
    return dataclasses.replace(entry, **changes)


def proprio_entry(**changes: Any) -> ObservationSpec:
    entry = ObservationSpec(
        name="proprio",
        dtype="float32",
        shape=(2,),
        layout="vector",
        quantities=(Quantity("slider.pos", "m"), Quantity("slider.vel", "m/s")),
    )
    return dataclasses.replace(entry, **changes)


def slide_action(low: float = -3.0, high: float = 3.0, unit: str = "100 N") -> ActionSpec:
    return ActionSpec(quantities=(Quantity("slide", unit),), low=(low,), high=(high,))


def pixel_spec(**changes: Any) -> PolicySpec:
    """The inverted-pendulum pixel spec; ``changes`` replace top-level fields."""
    spec = PolicySpec(
        observations=(pixels_entry(), proprio_entry()),
        action=slide_action(),
        control_period_s=0.04,
        action_repeat=1,
        provenance=Provenance(task_preset="inverted_pendulum", env_id="InvertedPendulum-v5"),
    )
    return dataclasses.replace(spec, **changes)


def with_entry(spec: PolicySpec, entry_name: str, /, **changes: Any) -> PolicySpec:
    """A copy of ``spec`` with observation entry ``entry_name`` changed."""
    entries = tuple(dataclasses.replace(o, **changes) if o.name == entry_name else o for o in spec.observations)
    return dataclasses.replace(spec, observations=entries)


def valid_obs(batch: int | None = None) -> dict[str, np.ndarray]:
    lead = () if batch is None else (batch,)
    return {
        "pixels": np.zeros((*lead, 84, 84, 9), dtype=np.uint8),
        "proprio": np.zeros((*lead, 2), dtype=np.float32),
    }


def spec_error(exc_type: type[Exception], message: str) -> Any:
    """``pytest.raises`` for an exact message (escaped, matched in full)."""
    return pytest.raises(exc_type, match="^" + re.escape(message) + "$")


def bad(value: object) -> Any:
    """Pass a deliberately ill-typed value past mypy."""
    return cast(Any, value)


# -- 1. serialization round trip ----------------------------------------------------------------


def test_json_round_trip_is_exact():
    spec = pixel_spec()
    text = spec.to_json()
    back = PolicySpec.from_json(text)
    assert back == spec
    assert back.to_json() == text
    assert back.hash() == spec.hash()
    assert isinstance(back.observations, tuple)
    assert back.observation("pixels").shape == (84, 84, 9)
    assert back.observation("proprio").quantities == (Quantity("slider.pos", "m"), Quantity("slider.vel", "m/s"))


def test_dict_round_trip_is_exact():
    spec = pixel_spec()
    data = spec.to_dict()
    # JSON-ready: tuples became lists, so plain json can write it.
    assert data["observations"][0]["shape"] == [84, 84, 9]
    assert data["action"]["low"] == [-3.0]
    assert data["format_version"] == SPEC_FORMAT_VERSION
    json.dumps(data, allow_nan=False)
    assert PolicySpec.from_dict(data) == spec


def test_from_json_accepts_bytes_and_indented_text():
    spec = pixel_spec()
    assert PolicySpec.from_json(spec.to_json().encode("utf-8")) == spec
    assert PolicySpec.from_json(spec.to_json(indent=2)) == spec


def test_to_json_is_canonical_with_sorted_keys():
    spec = pixel_spec()
    text = spec.to_json()
    assert text == pixel_spec().to_json()
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert text.startswith('{"action": {"high": [3.0], "low": [-3.0], "quantities": [{"name": "slide"')


def test_round_trip_keeps_provenance_and_descriptions():
    spec = with_entry(pixel_spec(), "pixels", description="front camera, 84x84, 3 frames")
    spec = spec.with_provenance(encoder="efficientnet_lite0", policy="student-conv", model_sha256="ab" * 32)
    back = PolicySpec.from_json(spec.to_json())
    assert back == spec
    assert back.provenance.model_sha256 == "ab" * 32
    assert back.observation("pixels").description == "front camera, 84x84, 3 frames"


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,11}", fullmatch=True)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_quantity = st.builds(Quantity, name=st.text(min_size=1, max_size=12), unit=st.text(max_size=8))


@st.composite
def _image_entry(draw: st.DrawFn, name: str) -> ObservationSpec:
    history = draw(st.integers(1, 4))
    height, width = draw(st.integers(1, 256)), draw(st.integers(1, 256))
    return ObservationSpec(
        name=name,
        dtype="uint8",
        shape=(height, width, 3 * history),
        layout="image",
        history=history,
        description=draw(st.text(max_size=20)),
    )


@st.composite
def _vector_entry(draw: st.DrawFn, name: str) -> ObservationSpec:
    history = draw(st.integers(1, 4))
    quantities = tuple(draw(st.lists(_quantity, min_size=1, max_size=5)))
    return ObservationSpec(
        name=name,
        dtype="float32",
        shape=(history * len(quantities),),
        layout="vector",
        history=history,
        quantities=quantities,
        description=draw(st.text(max_size=20)),
    )


# Two distinct finite floats, ordered: any low < high, including extreme magnitudes and -0.0.
_bounds = st.tuples(_finite, _finite).filter(lambda pair: pair[0] != pair[1]).map(lambda pair: sorted(pair))


@st.composite
def policy_specs(draw: st.DrawFn) -> PolicySpec:
    names = draw(st.lists(_names, min_size=1, max_size=3, unique=True))
    entries = tuple(draw(st.one_of(_image_entry(n), _vector_entry(n))) for n in names)
    quantities = tuple(draw(st.lists(_quantity, min_size=1, max_size=4)))
    bounds = [draw(_bounds) for _ in quantities]
    optional_text = st.none() | st.text(max_size=16)
    return PolicySpec(
        observations=entries,
        action=ActionSpec(quantities, tuple(lo for lo, _ in bounds), tuple(hi for _, hi in bounds)),
        control_period_s=draw(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)),
        action_repeat=draw(st.integers(1, 20)),
        provenance=Provenance(
            task_preset=draw(st.text(max_size=16)),
            env_id=draw(st.text(max_size=16)),
            encoder=draw(optional_text),
            policy=draw(optional_text),
            model_sha256=draw(optional_text),
        ),
    )


@settings(max_examples=40, derandomize=True, database=None, deadline=None)
@given(spec=policy_specs())
def test_round_trip_property(spec):
    back = PolicySpec.from_json(spec.to_json())
    assert back == spec
    assert back.hash() == spec.hash()
    assert back.interface_hash() == spec.interface_hash()
    assert back.differences(spec) == []
    assert PolicySpec.from_dict(spec.to_dict()) == spec


# -- 2. hashing ---------------------------------------------------------------------------------


def test_hash_is_stable_for_equal_specs():
    a, b = pixel_spec(), pixel_spec()
    assert a is not b
    assert a == b
    assert a.hash() == b.hash()
    assert a.interface_hash() == b.interface_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", a.hash())
    assert a.hash() != a.interface_hash()


def test_hash_golden_value():
    # See GOLDEN_HASH: a change here means the canonical JSON changed; bump SPEC_FORMAT_VERSION.
    assert pixel_spec().hash() == GOLDEN_HASH
    assert pixel_spec().interface_hash() == GOLDEN_INTERFACE_HASH


def test_hash_is_the_same_in_a_fresh_process():
    script = (
        "import sys\n"
        "from agent_runtime.spec import PolicySpec\n"
        "spec = PolicySpec.from_json(sys.stdin.read())\n"
        "print(spec.hash())\n"
        "print(spec.interface_hash())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}  # a different str-hash seed than this process
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=pixel_spec().to_json(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
        check=True,
    )
    assert result.stdout.split() == [GOLDEN_HASH, GOLDEN_INTERFACE_HASH]


def test_hash_does_not_depend_on_dict_key_order():
    data = pixel_spec().to_dict()
    reordered = dict(reversed(list(data.items())))
    reordered["provenance"] = dict(reversed(list(data["provenance"].items())))
    assert PolicySpec.from_dict(reordered).hash() == GOLDEN_HASH


_INTERFACE_CHANGES: dict[str, Callable[[PolicySpec], PolicySpec]] = {
    "pixels.shape": lambda s: with_entry(s, "pixels", shape=(64, 64, 9)),
    "pixels.history": lambda s: with_entry(s, "pixels", shape=(84, 84, 12), history=4),
    "proprio.unit": lambda s: with_entry(
        s, "proprio", quantities=(Quantity("slider.pos", "cm"), Quantity("slider.vel", "m/s"))
    ),
    "proprio.name": lambda s: with_entry(
        s, "proprio", quantities=(Quantity("cart.pos", "m"), Quantity("slider.vel", "m/s"))
    ),
    "proprio.history": lambda s: with_entry(s, "proprio", shape=(4,), history=2),
    "entry.renamed": lambda s: with_entry(s, "proprio", name="state"),
    "entry.order": lambda s: dataclasses.replace(s, observations=tuple(reversed(s.observations))),
    "entry.dropped": lambda s: dataclasses.replace(s, observations=s.observations[:1]),
    "action.low": lambda s: dataclasses.replace(s, action=slide_action(low=-2.0)),
    "action.high": lambda s: dataclasses.replace(s, action=slide_action(high=2.0)),
    "action.unit": lambda s: dataclasses.replace(s, action=slide_action(unit="N")),
    "control_period_s": lambda s: dataclasses.replace(s, control_period_s=0.02),
    "action_repeat": lambda s: dataclasses.replace(s, action_repeat=2),
}

_INFORMATIVE_CHANGES: dict[str, Callable[[PolicySpec], PolicySpec]] = {
    "provenance.task_preset": lambda s: s.with_provenance(task_preset="cartpole"),
    "provenance.env_id": lambda s: s.with_provenance(env_id="InvertedPendulum-v4"),
    "provenance.encoder": lambda s: s.with_provenance(encoder="efficientnet_lite0"),
    "provenance.policy": lambda s: s.with_provenance(policy="sac-teacher"),
    "provenance.model_sha256": lambda s: s.with_provenance(model_sha256="0" * 64),
    "pixels.description": lambda s: with_entry(s, "pixels", description="front camera"),
}


@pytest.mark.parametrize("change", list(_INTERFACE_CHANGES), ids=list(_INTERFACE_CHANGES))
def test_interface_change_changes_both_hashes(change):
    base = pixel_spec()
    changed = _INTERFACE_CHANGES[change](base)
    assert changed != base
    assert changed.hash() != base.hash()
    assert changed.interface_hash() != base.interface_hash()


@pytest.mark.parametrize("change", list(_INFORMATIVE_CHANGES), ids=list(_INFORMATIVE_CHANGES))
def test_informative_change_changes_hash_but_not_interface_hash(change):
    base = pixel_spec()
    changed = _INFORMATIVE_CHANGES[change](base)
    assert changed != base
    assert changed.hash() != base.hash()
    assert changed.interface_hash() == base.interface_hash()
    assert base.differences(changed) == []


def test_all_changed_hashes_are_distinct():
    base = pixel_spec()
    specs = [base] + [f(base) for f in (*_INTERFACE_CHANGES.values(), *_INFORMATIVE_CHANGES.values())]
    hashes = [s.hash() for s in specs]
    assert len(set(hashes)) == len(hashes)


# -- 3. from_dict / from_json errors ------------------------------------------------------------


def test_unknown_top_level_field_is_named():
    data = pixel_spec().to_dict()
    data["frame_skip"] = 2
    with spec_error(SpecError, "spec has unknown field(s) frame_skip"):
        PolicySpec.from_dict(data)


def test_unknown_fields_are_all_named_sorted():
    data = pixel_spec().to_dict()
    data["zeta"] = 1
    data["alpha"] = 2
    with spec_error(SpecError, "spec has unknown field(s) alpha, zeta"):
        PolicySpec.from_dict(data)


@pytest.mark.parametrize(
    ("path", "field", "where"),
    [
        (("observations", 0), "channels", "spec.observations[0]"),
        (("observations", 1, "quantities", 0), "scale", "spec.observations[1].quantities[0]"),
        (("action",), "clip", "spec.action"),
        (("action", "quantities", 0), "gear", "spec.action.quantities[0]"),
        (("provenance",), "seed", "spec.provenance"),
    ],
)
def test_unknown_nested_field_is_named_with_its_path(path, field, where):
    data = pixel_spec().to_dict()
    node = data
    for key in path:
        node = node[key]
    node[field] = 1
    with spec_error(SpecError, f"{where} has unknown field(s) {field}"):
        PolicySpec.from_dict(data)


@pytest.mark.parametrize(
    ("path", "field", "where"),
    [
        ((), "action_repeat", "spec"),
        ((), "control_period_s", "spec"),
        ((), "provenance", "spec"),
        (("observations", 1), "history", "spec.observations[1]"),
        (("observations", 0), "description", "spec.observations[0]"),
        (("observations", 1, "quantities", 1), "unit", "spec.observations[1].quantities[1]"),
        (("action",), "high", "spec.action"),
        (("provenance",), "env_id", "spec.provenance"),
        (("provenance",), "model_sha256", "spec.provenance"),
    ],
)
def test_missing_field_is_named_with_its_path(path, field, where):
    data = pixel_spec().to_dict()
    node = data
    for key in path:
        node = node[key]
    del node[field]
    with spec_error(SpecError, f"{where} is missing field(s) {field}"):
        PolicySpec.from_dict(data)


def test_missing_format_version():
    data = pixel_spec().to_dict()
    del data["format_version"]
    with spec_error(SpecError, "policy spec has no integer 'format_version'"):
        PolicySpec.from_dict(data)


def test_string_format_version():
    data = pixel_spec().to_dict()
    data["format_version"] = "1"
    with spec_error(SpecError, "policy spec has no integer 'format_version'"):
        PolicySpec.from_dict(data)


def test_newer_format_version_says_upgrade():
    data = pixel_spec().to_dict()
    data["format_version"] = SPEC_FORMAT_VERSION + 1
    message = (
        f"policy spec format version {SPEC_FORMAT_VERSION + 1} is newer than this agent-runtime understands "
        f"({SPEC_FORMAT_VERSION}); upgrade agent-runtime"
    )
    with spec_error(SpecError, message):
        PolicySpec.from_json(json.dumps(data))


def test_newer_format_version_is_refused_before_unknown_fields():
    # A newer writer may add fields: the reader must say "upgrade", not "unknown field".
    data = pixel_spec().to_dict()
    data["format_version"] = SPEC_FORMAT_VERSION + 1
    data["new_field"] = True
    with pytest.raises(SpecError, match="upgrade agent-runtime"):
        PolicySpec.from_dict(data)


def test_older_format_version_is_refused():
    data = pixel_spec().to_dict()
    data["format_version"] = 0
    message = f"spec format version 0 is not the one this agent-runtime speaks ({SPEC_FORMAT_VERSION})"
    with spec_error(SpecError, message):
        PolicySpec.from_dict(data)


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("observations", 0, "shape"), 84, "spec.observations[0].shape must be a list of integers"),
        (("observations", 0, "shape"), "84,84,9", "spec.observations[0].shape must be a list of integers"),
        (("observations", 0, "shape"), [84, "84", 9], "spec.observations[0].shape must be an integer, got '84'"),
        (("observations", 0, "shape"), [84, 84.0, 9], "spec.observations[0].shape must be an integer, got 84.0"),
        (("observations", 0, "shape"), [84, 84, True], "spec.observations[0].shape must be an integer, got True"),
        (("action_repeat",), "1", "spec.action_repeat must be an integer, got '1'"),
        (("action_repeat",), 1.0, "spec.action_repeat must be an integer, got 1.0"),
        (("action_repeat",), True, "spec.action_repeat must be an integer, got True"),
        (("control_period_s",), "0.04", "spec.control_period_s must be a number, got '0.04'"),
        (("control_period_s",), True, "spec.control_period_s must be a number, got True"),
        (("control_period_s",), None, "spec.control_period_s must be a number, got None"),
        (("observations",), {"pixels": {}}, "spec.observations must be a list"),
        (("observations", 0), ["pixels"], "spec.observations[0] must be a JSON object, got list"),
        (("observations", 0, "name"), 5, "spec.observations[0].name must be a string, got 5"),
        (("observations", 0, "dtype"), None, "spec.observations[0].dtype must be a string, got None"),
        (("observations", 0, "history"), "3", "spec.observations[0].history must be an integer, got '3'"),
        (("observations", 0, "description"), None, "spec.observations[0].description must be a string, got None"),
        (("observations", 1, "quantities"), "slider.pos", "spec.observations[1].quantities must be a list"),
        (
            ("observations", 1, "quantities", 0, "unit"),
            1,
            "spec.observations[1].quantities[0].unit must be a string, got 1",
        ),
        (("action",), [], "spec.action must be a JSON object, got list"),
        (("action", "low"), -3.0, "spec.action.low must be a list of numbers"),
        (("action", "high"), ["3"], "spec.action.high must be a number, got '3'"),
        (("action", "quantities", 0, "name"), None, "spec.action.quantities[0].name must be a string, got None"),
        (("provenance",), "inverted_pendulum", "spec.provenance must be a JSON object, got str"),
        (("provenance", "env_id"), None, "spec.provenance.env_id must be a string, got None"),
        (("provenance", "encoder"), 3, "spec.provenance.encoder must be a string, got 3"),
    ],
)
def test_wrong_type_is_named(path, value, message):
    data = pixel_spec().to_dict()
    _set(data, path, value)
    with spec_error(SpecError, message):
        PolicySpec.from_dict(data)


def test_from_dict_accepts_integer_numbers_as_floats():
    data = pixel_spec().to_dict()
    data["action"]["low"] = [-3]
    data["action"]["high"] = [3]
    spec = PolicySpec.from_dict(data)
    assert spec.action.low == (-3.0,)
    assert isinstance(spec.action.low[0], float)
    assert spec.hash() == GOLDEN_HASH


def test_from_dict_runs_the_constructor_checks():
    data = pixel_spec().to_dict()
    data["observations"][0]["shape"] = [84, 84, 3]  # history is 3
    with pytest.raises(SpecError, match=re.escape("observation 'pixels': an image entry has shape")):
        PolicySpec.from_dict(data)


def test_from_json_nan_bound_is_refused():
    text = pixel_spec().to_json().replace('"low": [-3.0]', '"low": [NaN]')
    with spec_error(SpecError, "action 'slide': bounds [nan, 3.0] must be finite with low < high"):
        PolicySpec.from_json(text)


@pytest.mark.parametrize("text", ["", "{", '{"format_version": 1,}', "spec: 1", "{'format_version': 1}"])
def test_invalid_json_text(text):
    with pytest.raises(SpecError, match=r"^policy spec is not valid JSON: ") as info:
        PolicySpec.from_json(text)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize(
    ("text", "type_name"),
    [("[1, 2]", "list"), ('"spec"', "str"), ("null", "NoneType"), ("1", "int"), ("true", "bool")],
)
def test_non_object_json(text, type_name):
    with spec_error(SpecError, f"a policy spec is a JSON object, got {type_name}"):
        PolicySpec.from_json(text)


def test_from_dict_non_mapping():
    with spec_error(SpecError, "a policy spec is a JSON object, got list"):
        PolicySpec.from_dict(bad([("format_version", 1)]))


# -- 4. constructor validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "history", "message"),
    [
        (
            (84, 84, 3),
            3,
            "observation 'pixels': an image entry has shape (H, W, 3 * history) = (H, W, 9); got (84, 84, 3)",
        ),
        (
            (84, 84, 9),
            1,
            "observation 'pixels': an image entry has shape (H, W, 3 * history) = (H, W, 3); got (84, 84, 9)",
        ),
        ((84, 84), 3, "observation 'pixels': an image entry has shape (H, W, 3 * history) = (H, W, 9); got (84, 84)"),
        (
            (3, 84, 84, 3),
            1,
            "observation 'pixels': an image entry has shape (H, W, 3 * history) = (H, W, 3); got (3, 84, 84, 3)",
        ),
        (
            (9, 84, 84),
            3,
            "observation 'pixels': an image entry has shape (H, W, 3 * history) = (H, W, 9); got (9, 84, 84)",
        ),
    ],
)
def test_image_shape_must_be_hw_and_three_channels_per_frame(shape, history, message):
    with spec_error(SpecError, message):
        pixels_entry(shape=shape, history=history)


def test_image_must_be_uint8():
    with spec_error(SpecError, "observation 'pixels': image entries are uint8, got float32"):
        pixels_entry(dtype="float32")


@pytest.mark.parametrize(
    ("shape", "history", "message"),
    [
        (
            (3,),
            1,
            "observation 'proprio': a vector entry has shape (history * quantities,) = (2,); "
            "got (3,) (2 quantities, history 1)",
        ),
        (
            (2,),
            2,
            "observation 'proprio': a vector entry has shape (history * quantities,) = (4,); "
            "got (2,) (2 quantities, history 2)",
        ),
        (
            (1, 2),
            1,
            "observation 'proprio': a vector entry has shape (history * quantities,) = (2,); "
            "got (1, 2) (2 quantities, history 1)",
        ),
    ],
)
def test_vector_shape_must_match_quantities_times_history(shape, history, message):
    with spec_error(SpecError, message):
        proprio_entry(shape=shape, history=history)


def test_vector_with_history_is_valid():
    entry = proprio_entry(shape=(6,), history=3)
    assert entry.shape == (6,)


@pytest.mark.parametrize("dtype", ["float64", "int32", "uint16", "", "np.uint8"])
def test_bad_dtype_is_named(dtype):
    with spec_error(SpecError, f"observation 'proprio': dtype {dtype!r} is not one of uint8, float32"):
        proprio_entry(dtype=bad(dtype))


def test_bad_layout_is_named():
    with spec_error(SpecError, "observation 'proprio': layout 'scalar' is not one of image, vector"):
        proprio_entry(layout=bad("scalar"))


@pytest.mark.parametrize("shape", [(84, 0, 9), (84, -84, 9), (84.0, 84, 9), ("84", 84, 9)])
def test_image_shape_dims_must_be_positive_integers(shape):
    with spec_error(SpecError, f"observation 'pixels': shape {shape} must be positive integers"):
        pixels_entry(shape=bad(shape))


@pytest.mark.parametrize("history", [0, -1])
def test_history_at_least_one(history):
    with spec_error(SpecError, f"observation 'pixels': history is {history}; it must be an integer of at least 1"):
        pixels_entry(history=history)


@pytest.mark.parametrize("name", ["", "1pixels", "pix els", "pixels/left", "-pixels"])
def test_bad_observation_name(name):
    with spec_error(SpecError, f"observation '{name}': name must be an identifier like 'pixels' or 'proprio'"):
        pixels_entry(name=name)


def test_empty_quantity_name():
    with spec_error(SpecError, "quantity name must not be empty"):
        Quantity("", "m")


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (3.0, 3.0, "action 'slide': bounds [3.0, 3.0] must be finite with low < high"),
        (3.0, -3.0, "action 'slide': bounds [3.0, -3.0] must be finite with low < high"),
        (float("nan"), 3.0, "action 'slide': bounds [nan, 3.0] must be finite with low < high"),
        (-3.0, float("nan"), "action 'slide': bounds [-3.0, nan] must be finite with low < high"),
        (float("-inf"), 3.0, "action 'slide': bounds [-inf, 3.0] must be finite with low < high"),
        (-3.0, float("inf"), "action 'slide': bounds [-3.0, inf] must be finite with low < high"),
    ],
)
def test_action_bounds_must_be_finite_and_ordered(low, high, message):
    with spec_error(SpecError, message):
        slide_action(low=low, high=high)


def test_action_bound_error_names_the_offending_dimension():
    quantities = (Quantity("bthigh", "120 N m"), Quantity("bshin", "90 N m"))
    with spec_error(SpecError, "action 'bshin': bounds [1.0, 1.0] must be finite with low < high"):
        ActionSpec(quantities, (-1.0, 1.0), (1.0, 1.0))


def test_empty_action():
    with spec_error(SpecError, "action: at least one action dimension is required"):
        ActionSpec((), (), ())


def test_action_bound_count_must_match():
    with spec_error(SpecError, "action: 1 quantities but 2 lower and 1 upper bounds"):
        ActionSpec((Quantity("slide", "100 N"),), (-3.0, -3.0), (3.0,))


def test_duplicate_observation_names():
    with spec_error(SpecError, "observation names must be unique, got ['proprio', 'pixels', 'proprio']"):
        pixel_spec(observations=(proprio_entry(), pixels_entry(), proprio_entry(shape=(4,), history=2)))


def test_no_observations():
    with spec_error(SpecError, "a policy spec needs at least one observation entry"):
        pixel_spec(observations=())


@pytest.mark.parametrize("period", [0.0, -0.04, float("nan"), float("inf")])
def test_control_period_must_be_positive(period):
    with spec_error(SpecError, f"control_period_s is {period}; it must be positive"):
        pixel_spec(control_period_s=period)


@pytest.mark.parametrize("repeat", [0, -2])
def test_action_repeat_at_least_one(repeat):
    with spec_error(SpecError, f"action_repeat is {repeat}; it must be an integer of at least 1"):
        pixel_spec(action_repeat=repeat)


def test_constructor_refuses_other_format_versions():
    with spec_error(
        SpecError, f"spec format version 2 is not the one this agent-runtime speaks ({SPEC_FORMAT_VERSION})"
    ):
        pixel_spec(format_version=2)


def test_spec_errors_are_value_errors():
    assert issubclass(SpecError, ValueError)
    assert issubclass(ObservationError, SpecError)
    assert issubclass(SpecMismatchError, SpecError)


def test_accessors():
    spec = pixel_spec()
    assert spec.observation_names == ("pixels", "proprio")
    assert spec.observation("proprio") == proprio_entry()
    assert spec.action.dim == 1
    assert spec.action.names == ("slide",)
    assert spec.observation("pixels").numpy_dtype == np.dtype(np.uint8)
    with pytest.raises(KeyError, match=re.escape("no observation entry 'depth'; the spec has pixels, proprio")):
        spec.observation("depth")


def test_with_provenance_replaces_only_the_given_fields():
    spec = pixel_spec().with_provenance(model_sha256="f" * 64)
    assert spec.provenance == Provenance("inverted_pendulum", "InvertedPendulum-v5", model_sha256="f" * 64)
    assert spec.observations == pixel_spec().observations


# -- 5. check_observation -----------------------------------------------------------------------


def test_valid_observation_passes():
    spec = pixel_spec()
    spec.check_observation(valid_obs())
    obs = valid_obs()
    obs["pixels"][:] = 255
    obs["proprio"][:] = (0.5, -1.0)
    spec.check_observation(obs)


@pytest.mark.parametrize("batch", [1, 4])
def test_valid_batched_observation_passes(batch):
    pixel_spec().check_observation(valid_obs(batch), batched=True)


def test_missing_entry():
    obs = valid_obs()
    del obs["proprio"]
    message = "observation is missing 'proprio' (float32 (2,)); the policy spec expects pixels, proprio"
    with spec_error(ObservationError, message):
        pixel_spec().check_observation(obs)


def test_unexpected_entry():
    obs = valid_obs()
    obs["depth"] = np.zeros((84, 84), dtype=np.float32)
    with spec_error(
        ObservationError, "observation has an unexpected entry 'depth'; the policy spec expects pixels, proprio"
    ):
        pixel_spec().check_observation(obs)


def test_wrong_dtype_for_pixels_says_uint8():
    obs = valid_obs()
    obs["pixels"] = obs["pixels"].astype(np.float32)
    with spec_error(ObservationError, "observation 'pixels' has dtype float32; the policy expects uint8"):
        pixel_spec().check_observation(obs)


def test_wrong_dtype_for_proprio_says_float32():
    obs = valid_obs()
    obs["proprio"] = obs["proprio"].astype(np.float64)
    with spec_error(ObservationError, "observation 'proprio' has dtype float64; the policy expects float32"):
        pixel_spec().check_observation(obs)


def test_wrong_pixels_shape_names_got_expected_and_frame_history():
    obs = valid_obs()
    obs["pixels"] = np.zeros((84, 84, 3), dtype=np.uint8)  # one frame, where the policy stacks three
    message = (
        "observation 'pixels' has shape (84, 84, 3); the policy expects (84, 84, 9): "
        "3 RGB frames of 84x84 stacked on the last axis (frame history is 3 in the policy spec)"
    )
    with spec_error(ObservationError, message):
        pixel_spec().check_observation(obs)


def test_channel_first_pixels_are_refused():
    obs = valid_obs()
    obs["pixels"] = np.zeros((9, 84, 84), dtype=np.uint8)
    with pytest.raises(ObservationError, match=re.escape("has shape (9, 84, 84); the policy expects (84, 84, 9)")):
        pixel_spec().check_observation(obs)


def test_wrong_proprio_shape_names_the_quantities():
    obs = valid_obs()
    obs["proprio"] = np.zeros((3,), dtype=np.float32)
    message = "observation 'proprio' has shape (3,); the policy expects (2,): history 1 of [slider.pos, slider.vel]"
    with spec_error(ObservationError, message):
        pixel_spec().check_observation(obs)


def test_list_instead_of_array():
    obs: dict[str, Any] = valid_obs()
    obs["proprio"] = [0.0, 0.0]
    with spec_error(ObservationError, "observation 'proprio' is a list; expected a numpy array"):
        pixel_spec().check_observation(obs)


def test_non_mapping_observation():
    with spec_error(ObservationError, "an observation is a mapping of entry name to array, got list"):
        pixel_spec().check_observation(bad([np.zeros(2, dtype=np.float32)]))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_proprio_names_the_index(value):
    obs = valid_obs()
    obs["proprio"][1] = value
    with spec_error(NonFiniteObservationError, "observation 'proprio' contains NaN or Inf (first at index (1,))"):
        pixel_spec().check_observation(obs)


def test_non_finite_batched_index_includes_the_batch_axis():
    obs = valid_obs(batch=4)
    obs["proprio"][2, 0] = np.nan
    obs["proprio"][3, 1] = np.nan
    with spec_error(NonFiniteObservationError, "observation 'proprio' contains NaN or Inf (first at index (2, 0))"):
        pixel_spec().check_observation(obs, batched=True)


def test_a_non_finite_value_never_hides_a_later_entrys_wrong_dtype():
    spec = pixel_spec(observations=(proprio_entry(), pixels_entry()))
    obs = valid_obs()
    obs["proprio"][0] = np.nan
    obs["pixels"] = obs["pixels"].astype(np.float32)
    with pytest.raises(ObservationError, match="'pixels' has dtype float32") as caught:
        spec.check_observation(obs)
    assert not isinstance(caught.value, NonFiniteObservationError)


def test_batched_with_mismatched_batch_sizes():
    obs = valid_obs(batch=4)
    obs["proprio"] = np.zeros((3, 2), dtype=np.float32)
    with spec_error(ObservationError, "observation 'proprio' has batch size 3; other entries have 4"):
        pixel_spec().check_observation(obs, batched=True)


def test_batched_without_batch_axis():
    obs = valid_obs()
    obs["pixels"] = np.zeros((), dtype=np.uint8)
    with spec_error(ObservationError, "observation 'pixels' has no batch axis; expected (B, *(84, 84, 9))"):
        pixel_spec().check_observation(obs, batched=True)


def test_unbatched_observation_checked_as_batched_is_refused():
    with pytest.raises(ObservationError, match=re.escape("observation 'pixels' has shape (84, 9); the policy expects")):
        pixel_spec().check_observation(valid_obs(), batched=True)


def test_batched_observation_checked_as_unbatched_is_refused():
    with pytest.raises(
        ObservationError, match=re.escape("observation 'pixels' has shape (2, 84, 84, 9); the policy expects")
    ):
        pixel_spec().check_observation(valid_obs(batch=2))


# -- 6. differences / check_compatible ----------------------------------------------------------


def test_identical_specs_have_no_differences():
    assert pixel_spec().differences(pixel_spec()) == []
    pixel_spec().check_compatible(pixel_spec())


def test_changed_pixels_shape():
    robot = with_entry(pixel_spec(), "pixels", shape=(64, 64, 9))
    assert pixel_spec().differences(robot) == [
        "observations.pixels.shape: the policy has (84, 84, 9), the robot has (64, 64, 9)"
    ]


def test_changed_pixels_history_names_shape_and_history():
    robot = with_entry(pixel_spec(), "pixels", shape=(84, 84, 12), history=4)
    assert pixel_spec().differences(robot) == [
        "observations.pixels.shape: the policy has (84, 84, 9), the robot has (84, 84, 12)",
        "observations.pixels.history: the policy has 3, the robot has 4",
    ]


def test_changed_action_high():
    robot = pixel_spec(action=slide_action(high=2.5))
    assert pixel_spec().differences(robot) == ["action.high: the policy has [3.0], the robot has [2.5]"]


def test_changed_action_low():
    robot = pixel_spec(action=slide_action(low=-1.0))
    assert pixel_spec().differences(robot) == ["action.low: the policy has [-3.0], the robot has [-1.0]"]


def test_changed_action_unit():
    robot = pixel_spec(action=slide_action(unit="N"))
    assert pixel_spec().differences(robot) == [
        "action.quantities: the policy has [slide (100 N)], the robot has [slide (N)]"
    ]


def test_changed_action_dimension_count():
    robot = pixel_spec(
        action=ActionSpec((Quantity("slide", "100 N"), Quantity("hinge", "N m")), (-3.0, -1.0), (3.0, 1.0))
    )
    assert pixel_spec().differences(robot) == [
        "action.quantities: the policy has [slide (100 N)], the robot has [slide (100 N), hinge (N m)]",
        "action.low: the policy has [-3.0], the robot has [-3.0, -1.0]",
        "action.high: the policy has [3.0], the robot has [3.0, 1.0]",
    ]


def test_changed_control_period():
    robot = pixel_spec(control_period_s=0.02)
    assert pixel_spec().differences(robot) == ["control_period_s: the policy has 0.04, the robot has 0.02"]


def test_control_period_rounding_noise_is_compatible():
    robot = pixel_spec(control_period_s=0.02 * 2)  # 0.04 computed, not typed
    assert pixel_spec().differences(robot) == []
    assert pixel_spec().differences(pixel_spec(control_period_s=0.04 * (1 + 1e-12))) == []
    assert len(pixel_spec().differences(pixel_spec(control_period_s=0.04 * (1 + 1e-6)))) == 1


def test_changed_action_repeat():
    robot = pixel_spec(action_repeat=2)
    assert pixel_spec().differences(robot) == ["action_repeat: the policy has 1, the robot has 2"]


def test_entry_only_on_the_policy_side():
    robot = pixel_spec(observations=(proprio_entry(),))
    assert pixel_spec().differences(robot) == [
        "observations.pixels: the policy needs it, the robot does not provide it"
    ]


def test_entry_only_on_the_robot_side():
    depth = ObservationSpec("depth", "uint8", (84, 84, 3), "image")
    robot = pixel_spec(observations=(pixels_entry(), proprio_entry(), depth))
    assert pixel_spec().differences(robot) == ["observations.depth: the robot provides it, the policy does not take it"]


def test_renamed_entry_is_reported_on_both_sides():
    robot = with_entry(pixel_spec(), "proprio", name="state")
    assert pixel_spec().differences(robot) == [
        "observations.proprio: the policy needs it, the robot does not provide it",
        "observations.state: the robot provides it, the policy does not take it",
    ]


def test_changed_quantities():
    robot = with_entry(
        pixel_spec(), "proprio", quantities=(Quantity("slider.pos", "cm"), Quantity("slider.vel", "m/s"))
    )
    assert pixel_spec().differences(robot) == [
        "observations.proprio.quantities: the policy has [slider.pos (m), slider.vel (m/s)], "
        "the robot has [slider.pos (cm), slider.vel (m/s)]"
    ]


def test_swapped_quantities_are_a_difference():
    robot = with_entry(pixel_spec(), "proprio", quantities=(Quantity("slider.vel", "m/s"), Quantity("slider.pos", "m")))
    assert pixel_spec().differences(robot) == [
        "observations.proprio.quantities: the policy has [slider.pos (m), slider.vel (m/s)], "
        "the robot has [slider.vel (m/s), slider.pos (m)]"
    ]


def test_provenance_and_description_changes_are_compatible():
    policy = pixel_spec()
    robot = with_entry(policy, "pixels", description="real camera").with_provenance(
        task_preset="other", env_id="Real-v0", encoder="x", policy="y", model_sha256="z"
    )
    assert policy.differences(robot) == []
    policy.check_compatible(robot)
    assert policy.interface_hash() == robot.interface_hash()
    assert policy.hash() != robot.hash()


def test_custom_side_labels():
    robot = pixel_spec(action_repeat=2)
    assert pixel_spec().differences(robot, ours="server", theirs="client") == [
        "action_repeat: the server has 1, the client has 2"
    ]


def test_spec_mismatch_error_lists_every_difference():
    robot = with_entry(pixel_spec(), "pixels", shape=(64, 64, 9))
    robot = dataclasses.replace(robot, action=slide_action(high=2.5), control_period_s=0.02, action_repeat=2)
    expected = [
        "observations.pixels.shape: the policy has (84, 84, 9), the robot has (64, 64, 9)",
        "action.high: the policy has [3.0], the robot has [2.5]",
        "control_period_s: the policy has 0.04, the robot has 0.02",
        "action_repeat: the policy has 1, the robot has 2",
    ]
    with pytest.raises(SpecMismatchError) as info:
        pixel_spec().check_compatible(robot)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, SpecError)
    assert err.differences == expected
    assert str(err) == "the robot's spec does not match the policy's: specs differ:\n  " + "\n  ".join(expected)


def test_spec_mismatch_error_without_context():
    err = SpecMismatchError(["a: x", "b: y"])
    assert str(err) == "specs differ:\n  a: x\n  b: y"
    assert err.differences == ["a: x", "b: y"]


def test_check_compatible_custom_labels_in_message():
    with pytest.raises(SpecMismatchError, match=re.escape("the client's spec does not match the server's")):
        pixel_spec().check_compatible(pixel_spec(action_repeat=3), ours="server", theirs="client")


# -- 7. ActionSpec.clip -------------------------------------------------------------------------


def test_clip_to_bounds():
    action = slide_action()
    out = action.clip(np.array([[-5.0], [-3.0], [0.5], [3.0], [7.0]], dtype=np.float32))
    np.testing.assert_array_equal(out, np.array([[-3.0], [-3.0], [0.5], [3.0], [3.0]], dtype=np.float32))


def test_clip_per_dimension():
    action = ActionSpec((Quantity("a", "N"), Quantity("b", "N")), (-1.0, 0.0), (1.0, 10.0))
    out = action.clip(np.array([5.0, -5.0]))
    np.testing.assert_array_equal(out, [1.0, 0.0])
    inside = np.array([0.25, 9.5])
    np.testing.assert_array_equal(action.clip(inside), inside)


# -- regressions: bugs these tests found in spec.py, now fixed --------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: pixel_spec(control_period_s=1), id="control_period_s=1"),
        pytest.param(lambda: pixel_spec(action=ActionSpec((Quantity("slide", "100 N"),), (-3,), (3,))), id="bounds"),
    ],
)
def test_int_valued_float_fields_hash_like_floats(build):
    spec = build()
    back = PolicySpec.from_json(spec.to_json())
    assert back == spec
    assert back.hash() == spec.hash()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"\x80{}", id="non-utf8-bytes"),
        pytest.param("[" * 100_000, id="deep-nesting"),
        pytest.param(
            pixel_spec().to_json().replace('"control_period_s": 0.04', '"control_period_s": 1' + "0" * 400),
            id="huge-int",
        ),
        # More digits than Python's int conversion limit (4300): json.loads raises a plain ValueError.
        pytest.param("1" * 5000, id="int-over-the-digit-limit"),
        pytest.param('{"control_period_s": ' + "1" * 5000 + "}", id="field-over-the-digit-limit"),
    ],
)
def test_from_json_raises_only_spec_error_on_hostile_input(text):
    with pytest.raises(SpecError):
        PolicySpec.from_json(text)


@pytest.mark.parametrize("case", ["shape", "format_version"])
def test_bools_are_not_integers(case):
    if case == "shape":
        with pytest.raises(SpecError):
            ObservationSpec("flag", "float32", bad((True,)), "vector", quantities=(Quantity("flag", "1"),))
    else:
        data = pixel_spec().to_dict()
        data["format_version"] = True
        with pytest.raises(SpecError):
            PolicySpec.from_dict(data)


def test_observation_name_with_trailing_newline_is_refused():
    with pytest.raises(SpecError):
        pixels_entry(name="pixels\n")


def test_spec_from_onnx_metadata_round_trip_and_errors():
    from agent_runtime.spec import ONNX_SPEC_KEY, spec_from_onnx_metadata

    spec = pixel_spec()
    assert spec_from_onnx_metadata({ONNX_SPEC_KEY: spec.to_json()}) == spec
    with pytest.raises(SpecError, match="carries no policy spec"):
        spec_from_onnx_metadata({}, source="policy.onnx")
    with pytest.raises(SpecError, match=r"policy\.onnx: policy spec is not valid JSON"):
        spec_from_onnx_metadata({ONNX_SPEC_KEY: "{"}, source="policy.onnx")
