"""What a task preset is: the plain data that decides what a policy sees and how often it acts.

The built-in presets (``train.presets``) and preset files (``train.preset_file``) both produce a
:class:`TaskPreset`. Plain data: importing it needs neither gymnasium nor MuJoCo.
"""

from __future__ import annotations

import re
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
    """Where frames are seen from: a free camera, optionally following a body, or a model's own camera.

    Attributes:
        distance: metres from the look-at point.
        elevation_deg: degrees; negative looks down.
        azimuth_deg: degrees around the vertical axis.
        lookat: the point the camera looks at (world frame, metres); the offset from the tracked
            body's centre of mass when ``track_body`` is set.
        track_body: name of a body to follow (for locomotion); ``None`` keeps the camera fixed.
        model_camera: a camera defined in the model, by index or name (DeepMind Control tasks are
            rendered from their camera 0, as DrQ-v2 renders them); the fields above are then unused.
    """

    distance: float = 2.5
    elevation_deg: float = -20.0
    azimuth_deg: float = 90.0
    lookat: tuple[float, float, float] = (0.0, 0.0, 0.0)
    track_body: str | None = None
    model_camera: int | str | None = None

    def __post_init__(self) -> None:
        if self.distance <= 0:
            raise ValueError(f"camera distance is {self.distance}; it must be positive")
        if isinstance(self.model_camera, int) and self.model_camera < 0:
            raise ValueError(f"camera model_camera is {self.model_camera}; a camera index is 0 or more")

    def describe(self) -> str:
        """One line for the spec."""
        if self.model_camera is not None:
            return f"the model's camera {self.model_camera!r}"
        return (
            f"camera distance {self.distance} m, elevation {self.elevation_deg} deg, azimuth {self.azimuth_deg} deg, "
            f"lookat {self.lookat}, tracking {self.track_body or 'nothing'}"
        )


PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""What a preset's name may be: it names run directories, curve records and plot files."""


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
        if not PRESET_NAME.fullmatch(self.name):
            raise ValueError(
                f"preset name {self.name!r} must be 1 to 64 letters, digits, '_', '-' or '.', the first a letter "
                "or digit: it names run directories and files"
            )
        readings = [(entry.joint, entry.reading) for entry in self.proprio]
        for joint, reading in readings:
            if readings.count((joint, reading)) > 1:
                raise ValueError(f"preset {self.name}: proprio reads joint {joint!r}'s {reading} twice; list it once")
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
