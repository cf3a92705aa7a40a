"""What an exported policy file promises its readers: named inputs and output, spec and hash inside.

The contract (``agent_runtime.spec``): one input per observation entry of the spec, in spec order,
named like it, with the spec's dtype and shape behind a dynamic batch axis; one output
``ONNX_ACTION_OUTPUT`` float32 (batch, A), or (batch, H, A) for a spec with an action chunk of H; the
spec as JSON under ``ONNX_SPEC_KEY`` in the model's metadata, its ``provenance.model_sha256`` the
:func:`weights_sha256` of the graph; and the spec format version under :data:`ONNX_SPEC_VERSION_KEY`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from agent_runtime.spec import ONNX_ACTION_OUTPUT, ONNX_SPEC_KEY, ONNX_SPEC_VERSION_KEY, PolicySpec
from distill.errors import ExportError

_ELEMENT_TYPES = {"uint8": onnx.TensorProto.UINT8, "float32": onnx.TensorProto.FLOAT}


def weights_sha256(model: onnx.ModelProto) -> str:
    """SHA-256 of the exported weights: every initializer of the model's main graph.

    Definition: initializers are taken in order of name (as Python sorts ``str``). For each, four
    fields are hashed: its name as UTF-8; its ONNX element type as a decimal string; its dims as
    signed 64-bit little-endian integers; its values as little-endian bytes in row-major order.
    Each field is preceded by its byte length as an unsigned 64-bit little-endian integer, so two
    different sets of tensors never give the same byte stream.

    Left out: metadata (which holds this hash), node names, doc strings, producer version, constant
    nodes (shape arithmetic, not weights). The same weights exported by the same exporter give the
    same hash, and anyone with the file and the ``onnx`` package can recompute it.
    """
    digest = hashlib.sha256()
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        values = numpy_helper.to_array(tensor)
        little_endian = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        fields = (
            tensor.name.encode("utf-8"),
            str(tensor.data_type).encode("ascii"),
            np.asarray(tensor.dims, dtype="<i8").tobytes(),
            little_endian.tobytes(),
        )
        for field in fields:
            digest.update(len(field).to_bytes(8, "little"))
            digest.update(field)
    return digest.hexdigest()


def attach_spec(model: onnx.ModelProto, spec: PolicySpec) -> PolicySpec:
    """Write ``spec`` (with ``model_sha256`` filled in) into ``model``'s metadata; returns that spec.

    Replaces earlier entries under the same keys, so attaching twice leaves one of each.
    """
    final = spec.with_provenance(model_sha256=weights_sha256(model))
    entries = {ONNX_SPEC_KEY: final.to_json(), ONNX_SPEC_VERSION_KEY: str(final.format_version)}
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    return final


def declare_action_shape(model: onnx.ModelProto, spec: PolicySpec) -> None:
    """Name the action output's shape ``(batch, A)`` (or ``(batch, H, A)``) exactly.

    The tracer cannot always follow the action dimension through the network (a ``chunk`` into mean
    and log std leaves it symbolic, e.g. ``Addaction_dim_1``); readers should see the number. The
    checker's strict shape inference then refuses the model if the graph disagrees.
    """
    for output in model.graph.output:
        if output.name != ONNX_ACTION_OUTPUT:
            continue
        dims = output.type.tensor_type.shape.dim
        if len(dims) == 1 + len(spec.action_shape):
            for dim, size in zip(list(dims)[1:], spec.action_shape, strict=True):
                if not dim.HasField("dim_value"):
                    dim.dim_value = size


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata entries as a dict (what onnxruntime's ``custom_metadata_map`` gives)."""
    return {p.key: p.value for p in model.metadata_props}


def check_interface(model: onnx.ModelProto, spec: PolicySpec) -> None:
    """Raise :class:`ExportError` unless the graph's inputs and output are the ones the contract names."""
    names = list(spec.observation_names)
    inputs = list(model.graph.input)
    got = [i.name for i in inputs]
    if got != names:
        missing = [n for n in names if n not in got]
        hint = (
            f": the module does not use {', '.join(missing)}, and an input the traced graph never reads is "
            "dropped; every observation entry of the spec must feed the policy"
            if missing
            else ""
        )
        raise ExportError(f"the exported graph's inputs are {got}; the spec's observation entries are {names}{hint}")
    for value, entry in zip(inputs, spec.observations, strict=True):
        _check_value(value, _ELEMENT_TYPES[entry.dtype], entry.dtype, entry.shape, f"input '{entry.name}'")
    outputs = list(model.graph.output)
    if [o.name for o in outputs] != [ONNX_ACTION_OUTPUT]:
        raise ExportError(
            f"the exported graph's outputs are {[o.name for o in outputs]}; expected [{ONNX_ACTION_OUTPUT!r}]"
        )
    _check_value(outputs[0], onnx.TensorProto.FLOAT, "float32", spec.action_shape, f"output '{ONNX_ACTION_OUTPUT}'")


def _check_value(value: onnx.ValueInfoProto, element: int, dtype: str, shape: Iterable[int], what: str) -> None:
    tensor = value.type.tensor_type
    if tensor.elem_type != element:
        got = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type) if tensor.elem_type else "unknown"
        raise ExportError(f"the exported graph's {what} is {got}; the spec says {dtype}")
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    expected = ["batch", *shape]
    if dims != expected:
        raise ExportError(
            f"the exported graph's {what} has shape {dims}; the contract is {expected} (a dynamic batch axis first)"
        )
