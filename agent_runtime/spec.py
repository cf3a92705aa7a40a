"""The policy spec: the versioned contract between train, export, the server and a robot.

A spec says exactly what a policy consumes and produces: each observation entry by name (dtype,
shape, frame history, and what each element of a vector measures, in which unit), the action
(names, units, bounds), and the timing (control period, action repeat). Train writes it, export
embeds it in the ONNX metadata, the server sends it at connect, and the client checks it against its
robot. A mismatch is refused with a message that names the field, never discovered as a silently
wrong action.

Pure Python and numpy: a robot host that installs only the runtime can read and check specs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SPEC_FORMAT_VERSION = 1
"""Bumped whenever the JSON layout changes; a reader refuses any other version (a newer one with
"upgrade agent-runtime")."""

ONNX_SPEC_KEY = "agent_runtime.spec"
"""Key of the ONNX metadata entry (``metadata_props``) holding the policy's spec as JSON."""

ONNX_SPEC_VERSION_KEY = "agent_runtime.spec_format_version"
"""Key of the ONNX metadata entry holding the spec's format version on its own, readable before parsing."""

ONNX_ACTION_OUTPUT = "action"
"""Name of an exported policy's output: float32 (batch, action dim), or (batch, H, action dim) for a
policy with an action chunk of H, already within the bounds.
Its inputs are named after the spec's observation entries, with a dynamic batch axis first."""

Dtype = Literal["uint8", "float32"]
Layout = Literal["image", "vector"]

_DTYPES: tuple[str, ...] = ("uint8", "float32")
_LAYOUTS: tuple[str, ...] = ("image", "vector")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# Relative tolerance for comparing floats of two specs (bounds, control period): they come from the
# same MuJoCo model through JSON, which round-trips floats exactly, so anything looser than rounding
# noise would hide a real difference.
_FLOAT_RTOL = 1e-9


class SpecError(ValueError):
    """A spec, or something checked against one, is not what the contract says."""


class SpecMismatchError(SpecError):
    """Two specs that must agree do not; the message lists every differing field."""

    def __init__(self, differences: list[str], context: str = "") -> None:
        self.differences = differences
        lead = f"{context}: " if context else ""
        super().__init__(lead + "specs differ:\n  " + "\n  ".join(differences))


class ObservationError(SpecError):
    """An observation does not match the spec; the message names the entry and what was expected."""


class NonFiniteObservationError(ObservationError):
    """A float entry of an observation that matches the spec's entries, dtypes and shapes holds NaN or Inf."""


@dataclass(frozen=True)
class Quantity:
    """One element of a vector observation or of the action: what it is and in which unit.

    Attributes:
        name: what the element measures, e.g. ``"slider.pos"`` or ``"bthigh"``.
        unit: its physical unit, e.g. ``"m"``, ``"rad/s"``; for actions, the physical quantity one
            unit of action stands for, e.g. ``"100 N"`` (MuJoCo actuator gear).
    """

    name: str
    unit: str

    def __post_init__(self) -> None:
        if not self.name:
            raise SpecError("quantity name must not be empty")


@dataclass(frozen=True)
class ObservationSpec:
    """One named observation entry.

    Attributes:
        name: entry name, e.g. ``"pixels"``, ``"proprio"`` or ``"state"``.
        dtype: ``"uint8"`` for camera frames, ``"float32"`` for vectors.
        shape: exact per-sample shape. Images are ``(H, W, 3 * history)``: channel-last RGB frames
            stacked on the channel axis, oldest first. Vectors are ``(history * len(quantities),)``.
        history: how many consecutive control steps the entry stacks (1 = current only).
        layout: ``"image"`` or ``"vector"``.
        quantities: for vectors, one per element of a single step (names and units).
        description: free text for people (camera, render settings); not part of compatibility.
    """

    name: str
    dtype: Dtype
    shape: tuple[int, ...]
    layout: Layout
    history: int = 1
    quantities: tuple[Quantity, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        where = f"observation '{self.name}'"
        if not _NAME.fullmatch(self.name):
            raise SpecError(f"{where}: name must be an identifier like 'pixels' or 'proprio'")
        if self.dtype not in _DTYPES:
            raise SpecError(f"{where}: dtype {self.dtype!r} is not one of {', '.join(_DTYPES)}")
        if self.layout not in _LAYOUTS:
            raise SpecError(f"{where}: layout {self.layout!r} is not one of {', '.join(_LAYOUTS)}")
        if not all(type(d) is int and d > 0 for d in self.shape):
            raise SpecError(f"{where}: shape {self.shape} must be positive integers")
        if type(self.history) is not int or self.history < 1:
            raise SpecError(f"{where}: history is {self.history!r}; it must be an integer of at least 1")
        if self.layout == "image":
            if len(self.shape) != 3 or self.shape[2] != 3 * self.history:
                raise SpecError(
                    f"{where}: an image entry has shape (H, W, 3 * history) = "
                    f"(H, W, {3 * self.history}); got {self.shape}"
                )
            if self.dtype != "uint8":
                raise SpecError(f"{where}: image entries are uint8, got {self.dtype}")
        else:
            expected = (self.history * len(self.quantities),)
            if self.shape != expected:
                raise SpecError(
                    f"{where}: a vector entry has shape (history * quantities,) = {expected}; "
                    f"got {self.shape} ({len(self.quantities)} quantities, history {self.history})"
                )

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The entry's dtype as a numpy dtype."""
        return np.dtype(self.dtype)


@dataclass(frozen=True)
class ActionSpec:
    """The action a policy produces.

    Attributes:
        quantities: one per action dimension (names and units).
        low: lower bound per dimension; actions are clipped to it.
        high: upper bound per dimension.
    """

    quantities: tuple[Quantity, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.quantities)
        if n == 0:
            raise SpecError("action: at least one action dimension is required")
        if len(self.low) != n or len(self.high) != n:
            raise SpecError(f"action: {n} quantities but {len(self.low)} lower and {len(self.high)} upper bounds")
        # Stored as float so that equal specs have equal JSON and equal hashes (1 and 1.0 alike).
        object.__setattr__(self, "low", tuple(_as_float(v, "action.low") for v in self.low))
        object.__setattr__(self, "high", tuple(_as_float(v, "action.high") for v in self.high))
        for q, lo, hi in zip(self.quantities, self.low, self.high, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
                raise SpecError(f"action '{q.name}': bounds [{lo}, {hi}] must be finite with low < high")

    @property
    def dim(self) -> int:
        """Number of action dimensions."""
        return len(self.quantities)

    @property
    def names(self) -> tuple[str, ...]:
        """Action dimension names, in order."""
        return tuple(q.name for q in self.quantities)

    def clip(self, action: np.ndarray) -> np.ndarray:
        """Clip ``action`` (float, (..., dim)) to the bounds."""
        return np.clip(action, np.asarray(self.low), np.asarray(self.high))


@dataclass(frozen=True)
class ActionChunk:
    """A policy that answers each observation with several future actions (an action chunk).

    Attributes:
        horizon: actions per answer, H >= 2. The first is for the control step the observation was
            taken at, action i for ``i * period_s`` later.
        period_s: seconds between two actions of a chunk (the control period, for a student distilled
            at the task's rate).
    """

    horizon: int
    period_s: float

    def __post_init__(self) -> None:
        if type(self.horizon) is not int or self.horizon < 2:
            raise SpecError(f"action_chunk.horizon is {self.horizon!r}; it must be an integer of at least 2")
        object.__setattr__(self, "period_s", _as_float(self.period_s, "action_chunk.period_s"))
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise SpecError(f"action_chunk.period_s is {self.period_s}; it must be positive")


@dataclass(frozen=True)
class Provenance:
    """What produced the policy. Informative only: never part of the compatibility check.

    Attributes:
        task_preset: the task preset the policy was trained on.
        env_id: the gymnasium environment id behind the preset.
        encoder: the vision encoder (timm name and output), if any.
        policy: which policy this is, e.g. ``"sac-teacher"`` or ``"student-conv"``.
        model_sha256: hash of the model file's weights, filled in by export.
        task_preset_sha256: for a task defined in a preset file, the SHA-256 of its canonical text
            (the training run keeps that text as ``preset.toml``); ``None`` for a built-in preset.
            Written only when set, so specs of built-in presets read as before.
    """

    task_preset: str
    env_id: str
    encoder: str | None = None
    policy: str | None = None
    model_sha256: str | None = None
    task_preset_sha256: str | None = None


@dataclass(frozen=True)
class PolicySpec:
    """The full contract of one policy. See the module docstring.

    Attributes:
        observations: the observation entries, in a fixed order.
        action: the action space.
        control_period_s: seconds between two policy decisions (simulator step times action repeat).
        action_repeat: simulator steps each action is held for.
        provenance: what produced this policy (not part of compatibility).
        format_version: the spec format version (see ``SPEC_FORMAT_VERSION``).
        action_chunk: for a policy that outputs H future actions per observation, H and the time
            between them; ``None`` (and absent from the JSON) for one action per observation. Part of
            the interface hash, so a client notices a swap between the two kinds, but not compared
            with a robot's spec: a robot is described by what it observes and does, and the client
            adapts to either kind.
    """

    observations: tuple[ObservationSpec, ...]
    action: ActionSpec
    control_period_s: float
    action_repeat: int
    provenance: Provenance
    format_version: int = field(default=SPEC_FORMAT_VERSION)
    action_chunk: ActionChunk | None = None

    def __post_init__(self) -> None:
        if not self.observations:
            raise SpecError("a policy spec needs at least one observation entry")
        names = [o.name for o in self.observations]
        if len(set(names)) != len(names):
            raise SpecError(f"observation names must be unique, got {names}")
        object.__setattr__(self, "control_period_s", _as_float(self.control_period_s, "control_period_s"))
        if not (math.isfinite(self.control_period_s) and self.control_period_s > 0):
            raise SpecError(f"control_period_s is {self.control_period_s}; it must be positive")
        if type(self.action_repeat) is not int or self.action_repeat < 1:
            raise SpecError(f"action_repeat is {self.action_repeat!r}; it must be an integer of at least 1")
        if type(self.format_version) is not int or self.format_version != SPEC_FORMAT_VERSION:
            raise SpecError(
                f"spec format version {self.format_version} is not the one this agent-runtime "
                f"speaks ({SPEC_FORMAT_VERSION})"
            )

    # -- access ---------------------------------------------------------------------------------

    @property
    def observation_names(self) -> tuple[str, ...]:
        """Observation entry names, in order."""
        return tuple(o.name for o in self.observations)

    def observation(self, name: str) -> ObservationSpec:
        """The observation entry called ``name``; a ``KeyError`` lists the known ones."""
        for entry in self.observations:
            if entry.name == name:
                return entry
        raise KeyError(f"no observation entry {name!r}; the spec has {', '.join(self.observation_names)}")

    def with_provenance(self, **changes: Any) -> PolicySpec:
        """A copy with some provenance fields replaced (e.g. ``model_sha256=...``)."""
        return dataclasses.replace(self, provenance=dataclasses.replace(self.provenance, **changes))

    def with_chunk(self, horizon: int | None, period_s: float | None = None) -> PolicySpec:
        """A copy for a policy answering ``horizon`` actions, ``period_s`` apart (default: the control period).

        ``horizon`` None or 1 gives a one-action spec.
        """
        if horizon is None or horizon == 1:
            return dataclasses.replace(self, action_chunk=None)
        period = self.control_period_s if period_s is None else period_s
        return dataclasses.replace(self, action_chunk=ActionChunk(horizon, period))

    @property
    def chunk_horizon(self) -> int:
        """Actions per answer: the chunk's horizon, or 1."""
        return 1 if self.action_chunk is None else self.action_chunk.horizon

    @property
    def action_shape(self) -> tuple[int, ...]:
        """The shape of one answer: (A,), or (H, A) for a chunked policy."""
        dim = self.action.dim
        return (dim,) if self.action_chunk is None else (self.action_chunk.horizon, dim)

    # -- serialization --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists).

        ``provenance.task_preset_sha256`` and ``action_chunk`` are written only when set.
        """
        data = _jsonable(dataclasses.asdict(self))
        if data["provenance"]["task_preset_sha256"] is None:
            del data["provenance"]["task_preset_sha256"]
        if data["action_chunk"] is None:
            del data["action_chunk"]
        return data

    def to_json(self, indent: int | None = None) -> str:
        """The spec as JSON text; keys sorted so equal specs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicySpec:
        """Parse a dict made by :meth:`to_dict`, refusing unknown or missing fields by name."""
        if not isinstance(data, Mapping):
            raise SpecError(f"a policy spec is a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if type(version) is not int:
            raise SpecError("policy spec has no integer 'format_version'")
        if version > SPEC_FORMAT_VERSION:
            raise SpecError(
                f"policy spec format version {version} is newer than this agent-runtime understands "
                f"({SPEC_FORMAT_VERSION}); upgrade agent-runtime"
            )
        if "action_chunk" not in data:  # optional: absent for a policy with one action per observation
            data = {**data, "action_chunk": None}
        fields = _take(
            data,
            "spec",
            (
                "observations", "action", "control_period_s", "action_repeat", "provenance", "format_version",
                "action_chunk",
            ),
        )  # fmt: skip
        observations = fields["observations"]
        if not isinstance(observations, list):
            raise SpecError("spec.observations must be a list")
        return cls(
            observations=tuple(_observation_from(o, i) for i, o in enumerate(observations)),
            action=_action_from(fields["action"]),
            control_period_s=_as_float(fields["control_period_s"], "spec.control_period_s"),
            action_repeat=_integer(fields["action_repeat"], "spec.action_repeat"),
            provenance=_provenance_from(fields["provenance"]),
            format_version=version,
            action_chunk=_chunk_from(fields["action_chunk"]),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PolicySpec:
        """Parse JSON text made by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, or an int over Python's digit limit
            raise SpecError(f"policy spec is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise SpecError("policy spec JSON is nested too deeply") from exc
        return cls.from_dict(data)

    def hash(self) -> str:
        """SHA-256 of the canonical JSON of the whole spec, provenance included."""
        return _sha256(self.to_dict())

    def interface_hash(self) -> str:
        """SHA-256 of the fields that compatibility compares (provenance and descriptions left out)."""
        data = self.to_dict()
        del data["provenance"]
        for entry in data["observations"]:
            del entry["description"]
        return _sha256(data)

    # -- checks ---------------------------------------------------------------------------------

    def differences(self, other: PolicySpec, ours: str = "policy", theirs: str = "robot") -> list[str]:
        """Every field where ``other`` is incompatible with this spec, one readable line each.

        Compared: observation entries (names, dtype, shape, layout, history, quantities), the action
        (names, units, bounds), the control period and the action repeat. Not compared: provenance,
        descriptions and the action chunk (the client adapts to it).
        """
        diffs: list[str] = []

        def differ(path: str, mine: Any, yours: Any) -> None:
            diffs.append(f"{path}: the {ours} has {mine}, the {theirs} has {yours}")

        mine_names, your_names = self.observation_names, other.observation_names
        for name in mine_names:
            if name not in your_names:
                diffs.append(f"observations.{name}: the {ours} needs it, the {theirs} does not provide it")
        for name in your_names:
            if name not in mine_names:
                diffs.append(f"observations.{name}: the {theirs} provides it, the {ours} does not take it")
        for mine in self.observations:
            if mine.name not in your_names:
                continue
            yours = other.observation(mine.name)
            for attr in ("dtype", "shape", "layout", "history"):
                if getattr(mine, attr) != getattr(yours, attr):
                    differ(f"observations.{mine.name}.{attr}", getattr(mine, attr), getattr(yours, attr))
            if mine.quantities != yours.quantities:
                differ(
                    f"observations.{mine.name}.quantities",
                    _describe(mine.quantities),
                    _describe(yours.quantities),
                )
        if self.action.quantities != other.action.quantities:
            differ("action.quantities", _describe(self.action.quantities), _describe(other.action.quantities))
        for attr in ("low", "high"):
            a, b = getattr(self.action, attr), getattr(other.action, attr)
            if len(a) != len(b) or not all(_close(x, y) for x, y in zip(a, b, strict=True)):
                differ(f"action.{attr}", list(a), list(b))
        if not _close(self.control_period_s, other.control_period_s):
            differ("control_period_s", self.control_period_s, other.control_period_s)
        if self.action_repeat != other.action_repeat:
            differ("action_repeat", self.action_repeat, other.action_repeat)
        return diffs

    def check_compatible(self, other: PolicySpec, ours: str = "policy", theirs: str = "robot") -> None:
        """Raise :class:`SpecMismatchError` naming every field where ``other`` differs."""
        diffs = self.differences(other, ours, theirs)
        if diffs:
            raise SpecMismatchError(diffs, context=f"the {theirs}'s spec does not match the {ours}'s")

    def check_observation(self, obs: Mapping[str, Any], batched: bool = False) -> None:
        """Raise :class:`ObservationError` if ``obs`` does not match the spec exactly.

        Entries, types, dtypes and shapes are checked first; only an observation that passes them
        all can raise :class:`NonFiniteObservationError` (a subclass), for NaN or Inf in a float entry.

        Args:
            obs: entry name to numpy array.
            batched: if true, every array has a leading batch axis (the same size for all).
        """
        if not isinstance(obs, Mapping):
            raise ObservationError(f"an observation is a mapping of entry name to array, got {type(obs).__name__}")
        expected = ", ".join(self.observation_names)
        for key in obs:
            if key not in self.observation_names:
                raise ObservationError(
                    f"observation has an unexpected entry {key!r}; the policy spec expects {expected}"
                )
        batch: int | None = None
        for entry in self.observations:
            if entry.name not in obs:
                raise ObservationError(
                    f"observation is missing {entry.name!r} ({entry.dtype} {entry.shape}); "
                    f"the policy spec expects {expected}"
                )
            value = obs[entry.name]
            where = f"observation {entry.name!r}"
            if not isinstance(value, np.ndarray):
                raise ObservationError(f"{where} is a {type(value).__name__}; expected a numpy array")
            if value.dtype != entry.numpy_dtype:
                raise ObservationError(f"{where} has dtype {value.dtype}; the policy expects {entry.dtype}")
            shape = value.shape[1:] if batched else value.shape
            if batched:
                if value.ndim == 0:
                    raise ObservationError(f"{where} has no batch axis; expected (B, *{entry.shape})")
                if batch is not None and value.shape[0] != batch:
                    raise ObservationError(f"{where} has batch size {value.shape[0]}; other entries have {batch}")
                batch = value.shape[0]
            if shape != entry.shape:
                raise ObservationError(
                    f"{where} has shape {shape}; the policy expects {entry.shape}{_shape_hint(entry)}"
                )
        # Values last: a reading with NaN never hides a wrong dtype or shape in a later entry.
        for entry in self.observations:
            value = obs[entry.name]
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                index = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
                raise NonFiniteObservationError(
                    f"observation {entry.name!r} contains NaN or Inf (first at index {index})"
                )


# -- helpers ------------------------------------------------------------------------------------


def _shape_hint(entry: ObservationSpec) -> str:
    if entry.layout == "image":
        return (
            f": {entry.history} RGB frames of {entry.shape[0]}x{entry.shape[1]} stacked on the last axis "
            f"(frame history is {entry.history} in the policy spec)"
        )
    names = ", ".join(q.name for q in entry.quantities)
    return f": history {entry.history} of [{names}]"


def _describe(quantities: tuple[Quantity, ...]) -> str:
    return "[" + ", ".join(f"{q.name} ({q.unit})" for q in quantities) + "]"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_FLOAT_RTOL, abs_tol=1e-12)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _sha256(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _take(data: Any, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SpecError(f"{where} has unknown field(s) {', '.join(unknown)}")
    missing = [n for n in names if n not in data]
    if missing:
        raise SpecError(f"{where} is missing field(s) {', '.join(missing)}")
    return {n: data[n] for n in names}


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise SpecError(f"{where} is too large a number") from None


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r}")
    return value


def _string(value: Any, where: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise SpecError(f"{where} must be a string, got {value!r}")
    return value


def _quantities_from(value: Any, where: str) -> tuple[Quantity, ...]:
    if not isinstance(value, list):
        raise SpecError(f"{where} must be a list")
    out = []
    for i, q in enumerate(value):
        f = _take(q, f"{where}[{i}]", ("name", "unit"))
        out.append(Quantity(_string(f["name"], f"{where}[{i}].name"), _string(f["unit"], f"{where}[{i}].unit")))
    return tuple(out)


def _observation_from(data: Any, index: int) -> ObservationSpec:
    where = f"spec.observations[{index}]"
    f = _take(data, where, ("name", "dtype", "shape", "layout", "history", "quantities", "description"))
    shape = f["shape"]
    if not isinstance(shape, list):
        raise SpecError(f"{where}.shape must be a list of integers")
    return ObservationSpec(
        name=_string(f["name"], f"{where}.name"),
        dtype=_string(f["dtype"], f"{where}.dtype"),
        shape=tuple(_integer(d, f"{where}.shape") for d in shape),
        layout=_string(f["layout"], f"{where}.layout"),
        history=_integer(f["history"], f"{where}.history"),
        quantities=_quantities_from(f["quantities"], f"{where}.quantities"),
        description=_string(f["description"], f"{where}.description"),
    )


def _action_from(data: Any) -> ActionSpec:
    f = _take(data, "spec.action", ("quantities", "low", "high"))
    bounds = {}
    for name in ("low", "high"):
        if not isinstance(f[name], list):
            raise SpecError(f"spec.action.{name} must be a list of numbers")
        bounds[name] = tuple(_as_float(v, f"spec.action.{name}") for v in f[name])
    return ActionSpec(_quantities_from(f["quantities"], "spec.action.quantities"), bounds["low"], bounds["high"])


def _chunk_from(data: Any) -> ActionChunk | None:
    if data is None:
        return None
    f = _take(data, "spec.action_chunk", ("horizon", "period_s"))
    return ActionChunk(
        _integer(f["horizon"], "spec.action_chunk.horizon"), _as_float(f["period_s"], "spec.action_chunk.period_s")
    )


def _provenance_from(data: Any) -> Provenance:
    names = ("task_preset", "env_id", "encoder", "policy", "model_sha256", "task_preset_sha256")
    if isinstance(data, Mapping) and "task_preset_sha256" not in data:  # optional: absent for built-in presets
        data = {**data, "task_preset_sha256": None}
    f = _take(data, "spec.provenance", names)
    return Provenance(
        task_preset=_string(f["task_preset"], "spec.provenance.task_preset"),
        env_id=_string(f["env_id"], "spec.provenance.env_id"),
        encoder=_string(f["encoder"], "spec.provenance.encoder", optional=True),
        policy=_string(f["policy"], "spec.provenance.policy", optional=True),
        model_sha256=_string(f["model_sha256"], "spec.provenance.model_sha256", optional=True),
        task_preset_sha256=_string(f["task_preset_sha256"], "spec.provenance.task_preset_sha256", optional=True),
    )


def spec_from_onnx_metadata(metadata: Mapping[str, str], source: str = "the ONNX file") -> PolicySpec:
    """The spec an exported policy carries in its metadata (onnxruntime's ``custom_metadata_map``).

    Raises:
        SpecError: naming ``source``, when the entry is missing or not a valid spec.
    """
    if ONNX_SPEC_KEY not in metadata:
        raise SpecError(
            f"{source} carries no policy spec (metadata key {ONNX_SPEC_KEY!r} is missing): "
            "export it with `agent-runtime export`"
        )
    try:
        return PolicySpec.from_json(metadata[ONNX_SPEC_KEY])
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from exc
