"""Named task presets over gymnasium's v5 MuJoCo environments and DeepMind Control Suite tasks.

A preset fixes everything that decides what a policy sees and how often it acts: the camera (placed
so the task is visible at the render size), the render size and quality, the frame history, the
action repeat, and which of the robot's own joint readings form the proprioceptive input. What only
the camera should tell (the pole angle, the Reacher target, the torso's pose) is withheld from
``proprio``, so that a pixel task is really a vision task.

This module is plain data: listing presets needs neither gymnasium nor MuJoCo.
"""

from __future__ import annotations

from train.task_preset import OBS_MODES, CameraConfig, JointReading, ObsMode, ProprioEntry, RenderQuality, TaskPreset

__all__ = [
    "DEFAULT_PRESET",
    "OBS_MODES",
    "PRESETS",
    "CameraConfig",
    "ObsMode",
    "ProprioEntry",
    "RenderQuality",
    "TaskPreset",
    "get_preset",
    "is_preset_file",
]


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
_DMC_CHEETAH = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")
_DMC_WALKER = ("right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle")

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


def _dmc(domain: str, task: str, summary: str, robot_joints: tuple[str, ...]) -> TaskPreset:
    """A DeepMind Control Suite task as DrQ-v2 sees it.

    84x84 RGB from the model's camera 0, 3 frames, each action held for 2 simulator steps. Proprio is
    the robot's own joints; the state is the suite's observation dict flattened (keys sorted), its
    names derived from the suite.
    """
    return TaskPreset(
        name=f"dmc_{'cup' if domain == 'ball_in_cup' else domain}_{task}",
        env_id=f"dm_control/{domain}-{task}-v0",
        summary=summary,
        camera=CameraConfig(model_camera=0),
        proprio=_joints(robot_joints, "position", "velocity"),
        state_quantities=(),
        action_repeat=2,
    )


_DMC_PRESETS = (
    _dmc("cartpole", "swingup", "DMC: swing a pole up from hanging and balance it; the pole is seen only", ("slider",)),
    _dmc("reacher", "easy", "DMC: reach a large target with a 2-link arm; the target is seen only",
         ("shoulder", "wrist")),
    _dmc("cheetah", "run", "DMC: run forward; the torso's pose and speed are seen only", _DMC_CHEETAH),
    _dmc("walker", "walk", "DMC: walk forward upright; the torso's pose and speed are seen only", _DMC_WALKER),
    _dmc("finger", "spin", "DMC: spin a hinged body with a 2-joint finger; the body is seen only",
         ("proximal", "distal")),
    _dmc("ball_in_cup", "catch", "DMC: swing a ball on a string into the cup; the ball is seen only",
         ("cup_x", "cup_z")),
)  # fmt: skip
PRESETS.update({p.name: p for p in _DMC_PRESETS})

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
        from train.preset_file import PresetFileError, load_preset_file  # gymnasium and MuJoCo only for files

        preset = load_preset_file(name)
        if preset.name in PRESETS:
            raise PresetFileError(
                f"{name}: name {preset.name!r} (set in the file, or else its file name) is a built-in preset's; set "
                'name = "..." in the file to a name of its own'
            )
        return preset
    raise ValueError(
        f"unknown task preset {name!r}; known presets: {', '.join(PRESETS)}, or the path of a preset file "
        f"(*{PRESET_FILE_SUFFIX}, see docs/presets/)"
    )
