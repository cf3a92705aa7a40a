"""Task presets read from TOML files: a user's own task without editing ``train/presets.py``.

A preset file defines what a built-in preset does (``train.presets.TaskPreset``). Every place that
takes a preset name also takes the path of such a file (``--preset my_task.toml``). The fields:

``env_id`` (required)
    a registered gymnasium id (``"Hopper-v5"``), or the user's own id with ``entry_point``.
``entry_point``
    ``"package.module:EnvClass"``: registers ``env_id`` first (the module must be importable).
``env_kwargs``
    a table of keyword arguments for ``gym.make``; a relative ``xml_file`` is read relative to the
    preset file, so a v5 MuJoCo env can load the user's own MJCF.
``camera`` (required)
    a table: ``distance`` (m), ``elevation_deg``, ``azimuth_deg``, optional ``lookat`` ([x, y, z] m)
    and ``track_body`` (a body of the model to follow; ``lookat`` is then the offset from its subtree
    centre of mass); or ``model_camera`` alone (other camera fields beside it are refused), one of
    the model's own cameras by index or name.
``proprio``
    the robot's own joint readings the policy gets beside the pixels, in order, each
    ``"<joint>.pos"`` or ``"<joint>.vel"`` (hinge or slide joints of the model), each once. Default none: the
    policy observes camera frames alone (its spec has no ``proprio`` entry).
``state_quantities``
    names and units of the env's state vector, ``[["name", "unit"], ...]``. Derived from the model
    when the state vector is the model's ``qpos`` (less some leading entries) and ``qvel``, as for
    most v5 locomotion envs; required otherwise.
``name``, ``summary``
    default the file's stem and the env id. A name is 1 to 64 letters, digits, ``_``, ``-`` or ``.``
    (the first a letter or digit; it names run directories and files) and not a built-in preset's.
``image_size``, ``frame_stack``, ``action_repeat``, ``render_quality``, ``marker_scale`` (a table
geom = factor), ``failure_on_termination``
    as on ``TaskPreset``; defaults 84, 3, 1, ``"fast"``, none, none.

Reading a file builds its env once (without rendering) to check it against the model: an unknown
joint, body or geom is reported with the model's own list, and the derived state names are checked
against the env's real observations. ``preset_to_toml`` writes a preset back as canonical text
(every field explicit, paths absolute); its SHA-256 is the preset's ``sha256``, so one task
definition has one hash wherever its file lies (an ``xml_file`` enters the text as its absolute
path, and neither the MJCF's content nor an ``entry_point``'s code is hashed). A run keeps that text
as ``preset.toml``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import sys
from pathlib import Path
from typing import Any, get_args

import gymnasium as gym
import mujoco
import numpy as np
import tomli_w

from agent_runtime.files import write_text_atomically

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI
    import tomli as tomllib

from train.base_env import make_base_env, mujoco_handles, state_names
from train.render import model_camera_index
from train.run_files import PRESET_COPY_NAME
from train.task_preset import PRESET_NAME, CameraConfig, ProprioEntry, RenderQuality, TaskPreset

FIELDS = (
    "name", "summary", "env_id", "entry_point", "env_kwargs", "camera", "proprio", "state_quantities",
    "image_size", "frame_stack", "action_repeat", "render_quality", "marker_scale", "failure_on_termination",
)  # fmt: skip
CAMERA_FIELDS = ("distance", "elevation_deg", "azimuth_deg", "lookat", "track_body", "model_camera")
_READINGS = {"pos": "position", "vel": "velocity"}
ENTRY_POINT = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""``package.module:EnvClass``, as gymnasium's registry takes it."""
_DERIVE_STEPS = 5


class PresetFileError(ValueError):
    """A preset file that cannot be used; the message names the file, the field and the fix."""


def load_preset_file(path: str | Path) -> TaskPreset:
    """The preset a TOML file defines, checked against its env's model (see the module docstring).

    Reads of an unchanged file in one process return the same preset without rebuilding the env.

    Raises:
        PresetFileError: the file is missing or unreadable, or a field is missing, unknown or wrong.
    """
    file = Path(path).expanduser()
    try:
        resolved = file.resolve(strict=True)
        stat = resolved.stat()
    except OSError as exc:
        raise PresetFileError(f"preset file {file} cannot be read ({exc.strerror or exc})") from None
    if not resolved.is_file():
        raise PresetFileError(f"preset file {file} is not a file")
    return _load(str(resolved), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _load(path: str, _mtime_ns: int, _size: int) -> TaskPreset:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetFileError(f"preset file {path} cannot be read ({exc})") from None
    return preset_from_toml(text, Path(path))


def preset_from_toml(text: str, path: Path) -> TaskPreset:
    """Parse, check and complete a preset file's text; ``path`` names it and anchors relative paths."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetFileError(f"{path}: not valid TOML ({exc})") from None
    fields = _Fields(data, str(path), FIELDS)
    camera_data = fields.table("camera", required=True)
    cam = _Fields(camera_data, f"{path}: camera", CAMERA_FIELDS)
    lookat = cam.numbers("lookat", 3) or (0.0, 0.0, 0.0)
    env_kwargs = dict(fields.table("env_kwargs") or {})
    xml = env_kwargs.get("xml_file")
    if isinstance(xml, str) and not Path(xml).expanduser().is_absolute():
        env_kwargs["xml_file"] = str((path.parent / xml).resolve())
    entry_point = fields.string("entry_point")
    if entry_point is not None and not ENTRY_POINT.fullmatch(entry_point):
        raise PresetFileError(
            f'{path}: entry_point is {entry_point!r}; write it as "package.module:EnvClass" (the module to import, '
            "a colon, then the env class or a function that makes the env)"
        )
    render_quality = fields.string("render_quality") or "fast"
    if render_quality not in get_args(RenderQuality):
        raise PresetFileError(
            f"{path}: render_quality is {render_quality!r}; use one of {', '.join(get_args(RenderQuality))}"
        )
    try:
        preset = TaskPreset(
            name=fields.string("name") or path.stem,
            env_id=fields.string("env_id", required=True) or "",
            summary=fields.string("summary") or "",
            camera=_camera(cam, lookat),
            proprio=tuple(_proprio_entry(name, path) for name in fields.strings("proprio")),
            state_quantities=fields.pairs("state_quantities"),
            image_size=fields.integer("image_size", 84),
            frame_stack=fields.integer("frame_stack", 3),
            action_repeat=fields.integer("action_repeat", 1),
            render_quality=render_quality,  # type: ignore[arg-type]  # checked above
            marker_scale=_marker_scale(fields.table("marker_scale"), path),
            failure_on_termination=fields.string("failure_on_termination"),
            env_kwargs=tuple((k, _freeze(v)) for k, v in env_kwargs.items()),
            entry_point=entry_point,
            source=str(path),
        )
    except ValueError as exc:  # the dataclasses' own checks (sizes, positive distance, name, ...)
        if isinstance(exc, PresetFileError):
            raise
        unnamed = "name" not in data and not PRESET_NAME.fullmatch(path.stem)
        hint = '; the name comes from the file\'s name: set name = "..." in the file' if unnamed else ""
        raise PresetFileError(f"{path}: {exc}{hint}") from None
    if not preset.summary:
        preset = _replace(preset, summary=f"{preset.env_id}, from {path.name}")
    preset = _checked_against_model(preset, path)
    return _replace(preset, sha256=hashlib.sha256(preset_to_toml(preset).encode()).hexdigest())


def preset_to_toml(preset: TaskPreset) -> str:
    """The preset as canonical TOML text: every field explicit, in a fixed order, paths absolute.

    Reading the text back gives the same preset (``source`` apart); its SHA-256 is ``preset.sha256``.
    """
    cam = preset.camera
    camera: dict[str, Any] = {
        "distance": cam.distance,
        "elevation_deg": cam.elevation_deg,
        "azimuth_deg": cam.azimuth_deg,
        "lookat": list(cam.lookat),
    }
    if cam.track_body is not None:
        camera["track_body"] = cam.track_body
    if cam.model_camera is not None:
        camera = {"model_camera": cam.model_camera}
    data: dict[str, Any] = {"name": preset.name, "summary": preset.summary, "env_id": preset.env_id}
    if preset.entry_point is not None:
        data["entry_point"] = preset.entry_point
    if preset.failure_on_termination is not None:
        data["failure_on_termination"] = preset.failure_on_termination
    data |= {
        "image_size": preset.image_size,
        "frame_stack": preset.frame_stack,
        "action_repeat": preset.action_repeat,
        "render_quality": preset.render_quality,
        "proprio": [f"{e.joint}.{'pos' if e.reading == 'position' else 'vel'}" for e in preset.proprio],
        "state_quantities": [list(pair) for pair in preset.state_quantities],
    }
    if preset.env_kwargs:
        data["env_kwargs"] = preset.make_kwargs()
    data["camera"] = camera
    if preset.marker_scale:
        data["marker_scale"] = dict(preset.marker_scale)
    return tomli_w.dumps(data)


def save_preset_copy(preset: TaskPreset, run_dir: Path) -> Path | None:
    """Keep a file preset's canonical text in ``run_dir`` (``preset.toml``); ``None`` for a built-in.

    Raises:
        PresetFileError: the run already holds a different preset (its file changed since the run
            began): the run cannot go on with another task definition.
    """
    if preset.sha256 is None:
        return None
    target = run_dir / PRESET_COPY_NAME
    text = preset_to_toml(preset)
    if target.is_file():
        kept = load_preset_file(target)
        if kept.sha256 != preset.sha256:
            raise PresetFileError(
                f"preset file {preset.source} is not the task {run_dir} was started on (its copy {target} differs); "
                f"restore the file, or go on with --preset {target}"
            )
        return target
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(target, text)
    return target


# -- checks against the model ----------------------------------------------------------------


def _checked_against_model(preset: TaskPreset, path: Path) -> TaskPreset:
    """Build the env (no rendering) and check every name in the preset against its model."""
    env = _make(preset, path)
    try:
        handles = mujoco_handles(env)
        if handles is None:
            raise PresetFileError(
                f"{path}: env_id: {preset.env_id} is not a MuJoCo environment (neither a gymnasium MuJoCo env nor "
                "a dm_control task); presets render MuJoCo models"
            )
        model, data = handles
        obs_space, act_space = env.observation_space, env.action_space
        if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
            raise PresetFileError(
                f"{path}: env_id: {preset.env_id}'s observation space is {obs_space}; a preset needs a flat Box state"
            )
        if not (isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1):
            raise PresetFileError(
                f"{path}: env_id: {preset.env_id}'s action space is {act_space}; a preset needs continuous actions"
            )
        if act_space.shape[0] == 0:
            xml = dict(preset.env_kwargs).get("xml_file")
            where = f"its model ({xml})" if xml else "its model"
            raise PresetFileError(
                f"{path}: env_id: {preset.env_id} has no actions: {where} has no actuators; add an <actuator> "
                "element to the MJCF for each joint the policy drives"
            )
        joints = [model.joint(i).name for i in range(model.njnt)]
        one_axis = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
        readable = [name for i, name in enumerate(joints) if int(model.jnt_type[i]) in one_axis and name]
        for entry in preset.proprio:
            if entry.joint not in joints:
                raise PresetFileError(
                    f"{path}: proprio: the model has no joint {entry.joint!r}; its joints are {', '.join(joints)}"
                )
            if entry.joint not in readable:
                raise PresetFileError(
                    f"{path}: proprio: joint {entry.joint!r} is not a hinge or slide joint (a free or ball joint has "
                    f"no single encoder reading); its hinge and slide joints are {', '.join(readable) or 'none'}"
                )
        if preset.camera.model_camera is not None:
            try:
                model_camera_index(model, preset.camera.model_camera)
            except ValueError as exc:
                raise PresetFileError(f"{path}: {exc}") from None
        body = preset.camera.track_body
        bodies = [model.body(i).name for i in range(model.nbody)]
        if body is not None and body not in bodies:
            raise PresetFileError(
                f"{path}: camera.track_body: the model has no body {body!r}; its bodies are {', '.join(bodies)}"
            )
        geoms = [model.geom(i).name for i in range(model.ngeom) if model.geom(i).name]
        for geom, _ in preset.marker_scale:
            if geom not in geoms:
                raise PresetFileError(
                    f"{path}: marker_scale: the model has no geom {geom!r}; its named geoms are {', '.join(geoms)}"
                )
        size = int(obs_space.shape[0])
        if preset.state_quantities:
            if len(preset.state_quantities) != size:
                raise PresetFileError(
                    f"{path}: state_quantities names {len(preset.state_quantities)} values, but {preset.env_id}'s "
                    f"state vector has {size}"
                )
            return preset
        derived = state_names(env) or _derive_state_quantities(env, model, data)
        if derived is None:
            raise PresetFileError(
                f"{path}: state_quantities: {preset.env_id}'s state vector ({size} values) is not the model's qpos "
                f'and qvel, so its names cannot be derived; list them: state_quantities = [["name", "unit"], ...] '
                f"({size} entries, in the env's order)"
            )
        return _replace(preset, state_quantities=derived)
    finally:
        env.close()


def _make(preset: TaskPreset, path: Path) -> gym.Env[Any, Any]:
    try:
        return make_base_env(preset)
    except PresetFileError:
        raise
    except Exception as exc:  # any failure of the user's env or its kwargs: one clear line
        what = f"entry point {preset.entry_point!r}" if preset.entry_point else "gymnasium"
        raise PresetFileError(
            f"{path}: env_id: {what} could not make {preset.env_id!r} with env_kwargs "
            f"{preset.make_kwargs()} ({type(exc).__name__}: {exc})"
        ) from None


def _derive_state_quantities(env: gym.Env[Any, Any], model: mujoco.MjModel, data: mujoco.MjData) -> Any:
    """Names of a ``qpos[skip:] + qvel`` state vector, checked on real observations; ``None`` if it is not one."""
    obs, _ = env.reset(seed=0)
    skip = model.nq + model.nv - int(np.asarray(obs).size)
    if not 0 <= skip <= model.nq:
        return None
    env.action_space.seed(0)
    for step in range(_DERIVE_STEPS + 1):
        expected = np.concatenate([data.qpos[skip:], data.qvel])
        if not np.allclose(np.asarray(obs, dtype=np.float64), expected, atol=1e-5):
            return None
        if step < _DERIVE_STEPS:
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                obs, _ = env.reset()
    positions, velocities = _coordinate_names(model)
    return tuple(positions[skip:]) + tuple(velocities)


def _coordinate_names(model: mujoco.MjModel) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(name, unit) of every qpos and every qvel entry, joint by joint."""
    positions: list[tuple[str, str]] = []
    velocities: list[tuple[str, str]] = []
    for i in range(model.njnt):
        name = model.joint(i).name or f"joint{i}"
        kind = int(model.jnt_type[i])
        if kind == int(mujoco.mjtJoint.mjJNT_FREE):
            positions += [(f"{name}.{a}", "m") for a in "xyz"] + [(f"{name}.q{a}", "1") for a in "wxyz"]
            velocities += [(f"{name}.v{a}", "m/s") for a in "xyz"] + [(f"{name}.w{a}", "rad/s") for a in "xyz"]
        elif kind == int(mujoco.mjtJoint.mjJNT_BALL):
            positions += [(f"{name}.q{a}", "1") for a in "wxyz"]
            velocities += [(f"{name}.w{a}", "rad/s") for a in "xyz"]
        elif kind == int(mujoco.mjtJoint.mjJNT_SLIDE):
            positions.append((f"{name}.pos", "m"))
            velocities.append((f"{name}.vel", "m/s"))
        else:
            positions.append((f"{name}.pos", "rad"))
            velocities.append((f"{name}.vel", "rad/s"))
    return positions, velocities


# -- field parsing ------------------------------------------------------------------------------


class _Fields:
    """Typed access to one TOML table, with errors that name the file and the field."""

    def __init__(self, data: Any, where: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise PresetFileError(f"{where} must be a table")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise PresetFileError(f"{where}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(known)}")
        self.data, self.where = data, where

    def _get(self, name: str, required: bool) -> Any:
        if name not in self.data:
            if required:
                raise PresetFileError(f"{self.where}: missing field {name!r}")
            return None
        return self.data[name]

    def _wrong(self, name: str, wanted: str) -> PresetFileError:
        return PresetFileError(f"{self.where}: {name} must be {wanted}, got {self.data[name]!r}")

    def string(self, name: str, required: bool = False) -> str | None:
        value = self._get(name, required)
        if value is not None and not (isinstance(value, str) and value):
            raise self._wrong(name, "a non-empty string")
        return value

    def number(self, name: str) -> float:
        value = self._get(name, True)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise self._wrong(name, "a finite number")
        return float(value)

    def integer(self, name: str, default: int) -> int:
        value = self._get(name, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "an integer")
        return value

    def numbers(self, name: str, count: int) -> tuple[float, ...] | None:
        value = self._get(name, False)
        if value is None:
            return None
        ok = isinstance(value, list) and len(value) == count
        if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise self._wrong(name, f"a list of {count} numbers")
        return tuple(float(v) for v in value)

    def strings(self, name: str) -> list[str]:
        value = self._get(name, False)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(name, "a list of strings")
        return value

    def pairs(self, name: str) -> tuple[tuple[str, str], ...]:
        value = self._get(name, False)
        if value is None:
            return ()
        ok = isinstance(value, list) and all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) for s in v) and v[0] for v in value
        )
        if not ok:  # a unit may be empty ("" for a dimensionless or mixed quantity, as dm_control's state)
            raise self._wrong(name, 'a list of ["name", "unit"] pairs (a non-empty name; the unit may be "")')
        return tuple((v[0], v[1]) for v in value)

    def table(self, name: str, required: bool = False) -> dict[str, Any] | None:
        value = self._get(name, required)
        if value is not None and not isinstance(value, dict):
            raise self._wrong(name, "a table")
        return value


def _proprio_entry(name: str, path: Path) -> ProprioEntry:
    joint, _, reading = name.rpartition(".")
    if not joint or reading not in _READINGS:
        raise PresetFileError(
            f'{path}: proprio entry {name!r} must be "<joint>.pos" or "<joint>.vel" (a joint\'s position or velocity)'
        )
    return ProprioEntry(joint, _READINGS[reading])  # type: ignore[arg-type]  # one of the two readings


def _camera(cam: _Fields, lookat: tuple[float, ...]) -> CameraConfig:
    """A model camera (``model_camera``: index or name) alone, or a free camera's three required fields."""
    model_camera = cam.data.get("model_camera")
    if model_camera is not None:
        if isinstance(model_camera, bool) or not isinstance(model_camera, (int, str)) or model_camera == "":
            raise PresetFileError(f"{cam.where}: model_camera must be a camera index or name, got {model_camera!r}")
        others = sorted(k for k in cam.data if k != "model_camera")
        if others:
            raise PresetFileError(
                f"{cam.where}: model_camera stands alone (the model's camera sets its own pose), but "
                f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} set beside it; remove "
                f"{'it' if len(others) == 1 else 'them'}, or drop model_camera for a free camera"
            )
        return CameraConfig(model_camera=model_camera)
    return CameraConfig(
        distance=cam.number("distance"),
        elevation_deg=cam.number("elevation_deg"),
        azimuth_deg=cam.number("azimuth_deg"),
        lookat=(lookat[0], lookat[1], lookat[2]),
        track_body=cam.string("track_body"),
    )


def _marker_scale(table: dict[str, Any] | None, path: Path) -> tuple[tuple[str, float], ...]:
    return tuple((geom, _positive(v, f"{path}: marker_scale.{geom}")) for geom, v in (table or {}).items())


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise PresetFileError(f"{where} must be a positive number, got {value!r}")
    return float(value)


def _freeze(value: Any) -> Any:
    """TOML lists as tuples (a preset is immutable); tables stay dicts."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    return value


def _replace(preset: TaskPreset, **changes: Any) -> TaskPreset:
    return dataclasses.replace(preset, **changes)


def check_same_task(preset: TaskPreset, trained_sha256: str | None, trained_on: str, policy: str) -> None:
    """Refuse to run a policy in a task other than the one it was trained on.

    Args:
        preset: the preset the user chose.
        trained_sha256: the policy spec's ``provenance.task_preset_sha256`` (``None``: a built-in preset).
        trained_on: the spec's ``provenance.task_preset`` name, for the message.
        policy: what the policy is (a file, a server), for the message.

    Raises:
        PresetFileError: the hashes differ, or the policy needs its preset file and was given none.
    """
    if preset.sha256 == trained_sha256:
        return
    if trained_sha256 is None:
        raise PresetFileError(
            f"{policy} was trained on the built-in preset {trained_on!r}, not on the preset file {preset.source}; "
            f"pass --preset {trained_on}"
        )
    where = f"the preset file {preset.source}" if preset.source else f"the built-in preset {preset.name!r}"
    raise PresetFileError(
        f"{policy} was trained on the preset file {trained_on!r} with hash {trained_sha256[:12]}, and "
        f"{where} is another task definition ({(preset.sha256 or 'built-in')[:12]}); pass --preset with the "
        f"training run's own {PRESET_COPY_NAME}"
    )
