"""Named task presets over gymnasium's v5 MuJoCo environments.

A preset fixes everything that decides what a policy sees and how often it acts: the camera (placed
so the task is visible at the render size), the render size and quality, the frame history, the
action repeat, and which of the robot's own joint readings form the proprioceptive input. What only
the camera should tell (the pole angle, the Reacher target, the torso's pose) is withheld from
``proprio``, so that a pixel task is really a vision task.

This module is plain data: listing presets needs neither gymnasium nor MuJoCo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RenderQuality = Literal["fast", "shadows", "default"]
"""How MuJoCo renders frames. Measured on the 2-core CPU machines (llvmpipe, 84x84):
``default`` (4x multisampling, 4096 shadow map, shadows and reflections) about 31 frames/s on
HalfCheetah; ``shadows`` (no multisampling, 512 shadow map) about 195; ``fast`` (no multisampling,
no shadows, no reflections) about 790."""

JointReading = Literal["position", "velocity"]
ObsMode = Literal["pixels", "state"]
"""``pixels``: camera frames plus proprio (the task as a robot sees it); ``state``: the full state
vector (privileged teachers, baselines, fast tests)."""
OBS_MODES: tuple[ObsMode, ...] = ("pixels", "state")


@dataclass(frozen=True)
class CameraConfig:
    """A MuJoCo free camera, optionally following a body.

    Attributes:
        distance: metres from the look-at point.
        elevation_deg: degrees; negative looks down.
        azimuth_deg: degrees around the vertical axis.
        lookat: the point the camera looks at (world frame, metres); the offset from the tracked
            body's centre of mass when ``track_body`` is set.
        track_body: name of a body to follow (for locomotion); ``None`` keeps the camera fixed.
    """

    distance: float
    elevation_deg: float
    azimuth_deg: float
    lookat: tuple[float, float, float] = (0.0, 0.0, 0.0)
    track_body: str | None = None

    def __post_init__(self) -> None:
        if self.distance <= 0:
            raise ValueError(f"camera distance is {self.distance}; it must be positive")


@dataclass(frozen=True)
class ProprioEntry:
    """One reading of one of the robot's own joints (a joint encoder or its derivative).

    Attributes:
        joint: MuJoCo joint name (a hinge or slide joint).
        reading: ``"position"`` (rad or m) or ``"velocity"`` (rad/s or m/s).
    """

    joint: str
    reading: JointReading


@dataclass(frozen=True)
class TaskPreset:
    """Everything that defines a task's observations and timing. See the module docstring.

    Attributes:
        name: preset name used on the command line.
        env_id: gymnasium environment id.
        summary: one line for people.
        camera: where the camera looks from.
        proprio: the joint readings the policy receives beside the pixels, in order.
        state_quantities: names and units of the env's full state vector (``state`` mode), in the
            order gymnasium returns it.
        image_size: rendered frames are ``image_size`` x ``image_size`` pixels.
        frame_stack: frames of history in ``pixels`` (oldest first).
        action_repeat: simulator steps (of the env's own ``dt``) per policy action.
        render_quality: see :data:`RenderQuality`.
        marker_scale: visual-only geoms (no contacts) to draw larger, by name and factor, so a
            marker such as the Reacher target is more than a pixel or two wide; physics is unchanged.
        failure_on_termination: what it means when the environment ends an episode before its time
            limit (e.g. "the pole fell"), for tasks where that is exactly a failure; ``None`` where
            termination is not a failure (or never happens). Reports count such episodes as failures.
        env_kwargs: keyword arguments for ``gym.make`` (e.g. ``xml_file`` for a v5 MuJoCo env on
            the user's own MJCF), as (name, value) pairs.
        entry_point: ``"package.module:EnvClass"`` to register ``env_id`` with before making it
            (the user's own env); ``None`` for an env gymnasium already knows.
        source: the preset file it was read from; ``None`` for a built-in preset.
        sha256: hash of the preset's canonical file text (``train.preset_file.preset_to_toml``):
            the same task definition has the same hash wherever it is read from. ``None`` for a
            built-in preset.
    """

    name: str
    env_id: str
    summary: str
    camera: CameraConfig
    proprio: tuple[ProprioEntry, ...]
    state_quantities: tuple[tuple[str, str], ...]
    image_size: int = 84
    frame_stack: int = 3
    action_repeat: int = 1
    render_quality: RenderQuality = "fast"
    marker_scale: tuple[tuple[str, float], ...] = ()
    failure_on_termination: str | None = None
    env_kwargs: tuple[tuple[str, Any], ...] = field(default=(), hash=False)  # values may be tables (dicts)
    entry_point: str | None = None
    source: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"preset {self.name}: image_size is {self.image_size}; use at least 16")
        if self.frame_stack < 1:
            raise ValueError(f"preset {self.name}: frame_stack is {self.frame_stack}; use at least 1")
        if self.action_repeat < 1:
            raise ValueError(f"preset {self.name}: action_repeat is {self.action_repeat}; use at least 1")
        for geom, factor in self.marker_scale:
            if factor <= 0:
                raise ValueError(f"preset {self.name}: marker_scale of {geom!r} is {factor}; it must be positive")

    def make_kwargs(self) -> dict[str, Any]:
        """``env_kwargs`` as the keyword arguments of ``gym.make``."""
        return {k: _thaw(v) for k, v in self.env_kwargs}


def _thaw(value: Any) -> Any:
    """A frozen keyword value as ``gym.make`` expects it: tuples back to lists, inside tables too."""
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _joints(names: tuple[str, ...], *readings: JointReading) -> tuple[ProprioEntry, ...]:
    """Readings of several joints: all positions first, then all velocities (gymnasium's order)."""
    return tuple(ProprioEntry(j, r) for r in readings for j in names)


def _qpos_qvel(joints: tuple[tuple[str, str], ...], skip_positions: int) -> tuple[tuple[str, str], ...]:
    """State names of a ``qpos[skip:] + qvel`` observation; ``joints`` are (name, "hinge"|"slide")."""
    pos_unit = {"hinge": "rad", "slide": "m"}
    vel_unit = {"hinge": "rad/s", "slide": "m/s"}
    positions = tuple((f"{j}.pos", pos_unit[kind]) for j, kind in joints[skip_positions:])
    velocities = tuple((f"{j}.vel", vel_unit[kind]) for j, kind in joints)
    return positions + velocities


_CHEETAH_JOINTS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
_WALKER_JOINTS = ("thigh_joint", "leg_joint", "foot_joint", "thigh_left_joint", "leg_left_joint", "foot_left_joint")
_PLANAR_ROOT = (("rootx", "slide"), ("rootz", "slide"), ("rooty", "hinge"))

PRESETS: dict[str, TaskPreset] = {
    p.name: p
    for p in (
        TaskPreset(
            name="inverted_pendulum",
            env_id="InvertedPendulum-v5",
            summary="balance a pole on a cart; the pole angle comes only from the camera",
            # Side view of the whole 2 m rail, so the cart never leaves the frame; the 0.6 m pole is
            # about 25 pixels long at 84x84.
            camera=CameraConfig(distance=2.5, elevation_deg=0.0, azimuth_deg=90.0, lookat=(0.0, 0.0, 0.2)),
            proprio=_joints(("slider",), "position", "velocity"),
            state_quantities=_qpos_qvel((("slider", "slide"), ("hinge", "hinge")), skip_positions=0),
            # The env terminates when the pole leans more than 0.2 rad: the episode's failure.
            failure_on_termination="the pole fell",
        ),
        TaskPreset(
            name="reacher",
            env_id="Reacher-v5",
            summary="move a 2-link arm's fingertip to a target seen only by the camera",
            # Top-down over the reachable disc (radius 0.21 m): the default camera leaves the target a
            # pixel or two wide at 84x84. Enlarged 2.5x, the target is about 8 pixels across.
            camera=CameraConfig(distance=0.6, elevation_deg=-90.0, azimuth_deg=90.0),
            marker_scale=(("target", 2.5),),
            proprio=_joints(("joint0", "joint1"), "position", "velocity"),
            state_quantities=(
                ("cos(joint0)", "1"),
                ("cos(joint1)", "1"),
                ("sin(joint0)", "1"),
                ("sin(joint1)", "1"),
                ("target_x.pos", "m"),
                ("target_y.pos", "m"),
                ("joint0.vel", "rad/s"),
                ("joint1.vel", "rad/s"),
                ("fingertip_to_target.x", "m"),
                ("fingertip_to_target.y", "m"),
            ),
        ),
        TaskPreset(
            name="half_cheetah",
            env_id="HalfCheetah-v5",
            summary="run forward; the torso's height, pitch and speed come only from the camera",
            camera=CameraConfig(distance=3.2, elevation_deg=-10.0, azimuth_deg=90.0, track_body="torso"),
            proprio=_joints(_CHEETAH_JOINTS, "position", "velocity"),
            state_quantities=_qpos_qvel(_PLANAR_ROOT + tuple((j, "hinge") for j in _CHEETAH_JOINTS), 1),
        ),
        TaskPreset(
            name="walker2d",
            env_id="Walker2d-v5",
            summary="walk forward without falling; the torso's pose and speed come only from the camera",
            camera=CameraConfig(distance=3.2, elevation_deg=-10.0, azimuth_deg=90.0, track_body="torso"),
            proprio=_joints(_WALKER_JOINTS, "position", "velocity"),
            state_quantities=_qpos_qvel(_PLANAR_ROOT + tuple((j, "hinge") for j in _WALKER_JOINTS), 1),
            # The env steps 8 ms; holding each action for 4 steps gives a 32 ms (31 Hz) control period.
            action_repeat=4,
            # Terminated when unhealthy: the torso too low or tilted, i.e. the walker fell.
            failure_on_termination="the walker fell",
        ),
    )
}

DEFAULT_PRESET = "inverted_pendulum"


PRESET_FILE_SUFFIX = ".toml"


def is_preset_file(name: str) -> bool:
    """Whether ``name`` refers to a preset file (a path ending in ``.toml``) rather than a built-in."""
    return name.endswith(PRESET_FILE_SUFFIX)


def get_preset(name: str) -> TaskPreset:
    """The built-in preset called ``name``, or the preset file at path ``name`` (``*.toml``).

    An unknown name raises a ``ValueError`` listing the known ones; a bad file raises a
    ``PresetFileError`` naming the file, the field and the fix. Reading a file builds its env once
    to check it (``train.preset_file``), so that path needs gymnasium and MuJoCo.
    """
    if name in PRESETS:
        return PRESETS[name]
    if is_preset_file(name):
        from train.preset_file import load_preset_file  # gymnasium and MuJoCo only for files

        return load_preset_file(name)
    raise ValueError(
        f"unknown task preset {name!r}; known presets: {', '.join(PRESETS)}, or the path of a preset file "
        f"(*{PRESET_FILE_SUFFIX}, see docs/presets/)"
    )
