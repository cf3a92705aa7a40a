"""Environments for the task presets: pixel (camera + proprio) and state observations.

``make_env`` is the one place an environment is built, for training, evaluation, distillation and
the simulated robot alike, so that every stage sees exactly the same observations.

Observations are dicts of named arrays, matching the preset's policy spec (``build_spec``):

* ``pixels`` mode: ``pixels`` uint8 (H, W, 3 * frame_stack), frames stacked on the channel axis,
  oldest first; ``proprio`` float32 (P,), the preset's joint readings.
* ``state`` mode: ``state`` float32 (S,), gymnasium's full state vector (privileged).
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
from collections import deque
from typing import Any, SupportsFloat, cast

import gymnasium as gym
import mujoco
import numpy as np
from typing_extensions import override

from agent_runtime.spec import ActionSpec, ObservationSpec, PolicySpec, Provenance, Quantity
from train.base_env import make_base_env, mujoco_handles, state_names
from train.presets import OBS_MODES, ObsMode, TaskPreset, get_preset
from train.render import FrameRenderer

_JOINT_UNITS = {
    mujoco.mjtJoint.mjJNT_HINGE: ("rad", "rad/s", "N·m"),
    mujoco.mjtJoint.mjJNT_SLIDE: ("m", "m/s", "N"),
}


class ActionRepeat(gym.Wrapper[Any, Any, Any, Any]):
    """Holds each action for ``repeat`` simulator steps and sums their rewards.

    One wrapper step is one policy step (``frame = step * repeat``). An episode that ends inside the
    repeat ends the wrapper step.
    """

    def __init__(self, env: gym.Env[Any, Any], repeat: int) -> None:
        super().__init__(env)
        self.repeat = repeat

    @override
    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class _JointReader:
    """Reads named joints' positions and velocities out of ``MjData`` (looked up by name once)."""

    def __init__(self, model: mujoco.MjModel, preset: TaskPreset) -> None:
        self.qpos_index: list[int] = []
        self.qvel_index: list[int] = []
        self.is_position: list[bool] = []
        for entry in preset.proprio:
            joint = _joint(model, entry.joint, preset)
            self.is_position.append(entry.reading == "position")
            self.qpos_index.append(int(joint.qposadr[0]))
            self.qvel_index.append(int(joint.dofadr[0]))

    def read(self, data: mujoco.MjData) -> np.ndarray:
        pos = data.qpos[self.qpos_index]
        vel = data.qvel[self.qvel_index]
        return np.where(self.is_position, pos, vel).astype(np.float32)


def _joint(model: mujoco.MjModel, name: str, preset: TaskPreset) -> Any:
    try:
        joint = model.joint(name)
    except KeyError:
        known = ", ".join(model.joint(i).name for i in range(model.njnt))
        raise ValueError(
            f"preset {preset.name}: {preset.env_id} has no joint {name!r}; its joints are {known}"
        ) from None
    if int(joint.type[0]) not in _JOINT_UNITS:
        raise ValueError(f"preset {preset.name}: joint {name!r} is not a hinge or slide joint")
    return joint


def _dict_space(spaces: dict[str, gym.spaces.Space[Any]]) -> gym.spaces.Space[dict[str, np.ndarray]]:
    return cast(gym.spaces.Space[dict[str, np.ndarray]], gym.spaces.Dict(spaces))


class PixelObservation(gym.Wrapper[dict[str, np.ndarray], Any, Any, Any]):
    """Replaces the state observation with ``pixels`` (stacked camera frames) and ``proprio``.

    Renders once per policy step, after the (repeated) simulator steps.
    """

    def __init__(self, env: gym.Env[Any, Any], preset: TaskPreset, with_state: bool = False) -> None:
        super().__init__(env)
        self._with_state = with_state
        self._state = np.zeros(0, np.float32)
        model, self._data = preset_handles(env, preset)
        self._joints = _JointReader(model, preset)
        self._renderer = FrameRenderer(model, preset.image_size, preset.camera, preset.render_quality)
        self._frames: deque[np.ndarray] = deque(maxlen=preset.frame_stack)
        size, k = preset.image_size, preset.frame_stack
        spaces: dict[str, gym.spaces.Space[Any]] = {"pixels": gym.spaces.Box(0, 255, (size, size, 3 * k), np.uint8)}
        self._with_proprio = bool(preset.proprio)  # a preset without joint readings: camera frames alone
        if self._with_proprio:
            spaces["proprio"] = gym.spaces.Box(-np.inf, np.inf, (len(preset.proprio),), np.float32)
        if with_state:
            box = env.observation_space
            assert isinstance(box, gym.spaces.Box)
            spaces["state"] = gym.spaces.Box(-np.inf, np.inf, box.shape, np.float32)
        self.observation_space = _dict_space(spaces)

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"pixels": np.concatenate(self._frames, axis=-1)}
        if self._with_proprio:
            obs["proprio"] = self._joints.read(self._data)
        if self._with_state:
            obs["state"] = self._state
        return obs

    @override
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        state, info = self.env.reset(seed=seed, options=options)
        self._state = np.asarray(state, dtype=np.float32)
        frame = self._renderer.render(self._data)
        for _ in range(self._frames.maxlen or 1):
            self._frames.append(frame)
        return self._observation(), info

    @override
    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        state, reward, terminated, truncated, info = self.env.step(action)
        self._state = np.asarray(state, dtype=np.float32)
        self._frames.append(self._renderer.render(self._data))
        return self._observation(), reward, terminated, truncated, info

    def render_frame(self) -> np.ndarray:
        """The current camera frame, uint8 (H, W, 3), e.g. for a video."""
        return self._renderer.render(self._data)

    @override
    def close(self) -> None:
        self._renderer.close()
        super().close()


class StateObservation(gym.ObservationWrapper[dict[str, np.ndarray], Any, Any]):
    """Names gymnasium's state vector ``state`` and makes it float32."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        box = env.observation_space
        assert isinstance(box, gym.spaces.Box)
        self.observation_space = _dict_space({"state": gym.spaces.Box(-np.inf, np.inf, box.shape, np.float32)})

    @override
    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        return {"state": np.asarray(observation, dtype=np.float32)}


def make_env(
    preset: TaskPreset | str, mode: ObsMode = "pixels", with_state: bool = False
) -> gym.Env[dict[str, np.ndarray], np.ndarray]:
    """Build the environment of a preset.

    Args:
        preset: a preset or its name.
        mode: ``"pixels"`` for camera frames plus proprio, ``"state"`` for the full state vector.
        with_state: in ``"pixels"`` mode, also give the full ``state`` vector (for a privileged
            state teacher labelling what a pixel student sees).

    Returns:
        A gymnasium env whose observations are dicts of named arrays (see the module docstring).
        Seed it through ``reset(seed=...)``.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    if mode not in OBS_MODES:
        raise ValueError(f"observation mode {mode!r} is not one of {', '.join(OBS_MODES)}")
    env = make_base_env(preset)
    _scale_markers(preset_handles(env, preset)[0], preset)
    if preset.action_repeat > 1:
        env = ActionRepeat(env, preset.action_repeat)
    if mode == "pixels":
        return PixelObservation(env, preset, with_state)
    return StateObservation(env)


def preset_handles(env: gym.Env[Any, Any], preset: TaskPreset) -> tuple[mujoco.MjModel, mujoco.MjData]:
    """The MuJoCo model and data under a preset's env (gymnasium's or dm_control's); an error for any other env."""
    handles = mujoco_handles(env)
    if handles is None:
        raise ValueError(
            f"preset {preset.name}: {preset.env_id} is not a MuJoCo environment; presets render MuJoCo models"
        )
    return handles


def _scale_markers(model: mujoco.MjModel, preset: TaskPreset) -> None:
    """Draw the preset's visual-only marker geoms larger; refuses geoms that take part in contacts."""
    where = f"{preset.source}: marker_scale" if preset.source else f"preset {preset.name}"
    for name, factor in preset.marker_scale:
        geom_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
        if geom_id < 0:
            raise ValueError(f"{where}: {preset.env_id} has no geom {name!r} to scale")
        if model.geom_contype[geom_id] or model.geom_conaffinity[geom_id]:
            raise ValueError(
                f"{where}: geom {name!r} takes part in contacts; only visual markers (no contacts) may be scaled"
            )
        model.geom_size[geom_id] *= factor
        model.geom_rbound[geom_id] *= factor


def make_vector_env(
    preset: TaskPreset | str, mode: ObsMode, num_envs: int, processes: bool = True
) -> gym.vector.VectorEnv[Any, Any, Any]:
    """``num_envs`` copies of a preset's environment, each in its own process by default.

    One process per environment also gives every renderer its own GL context. Workers are spawned,
    not forked, so they never inherit a GL context from the parent. Episodes reset in the same step
    they end (the final observation is in ``info["final_obs"]``).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs is {num_envs}; it must be at least 1")
    if isinstance(preset, str):
        preset = get_preset(preset)  # fail here, with the list of presets, not in a worker process
    # Workers get the preset itself, not its name: a preset file is read once, here.
    if processes:
        fns = [functools.partial(_make_worker_env, preset, mode) for _ in range(num_envs)]
        return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    fns = [functools.partial(make_env, preset, mode) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _make_worker_env(preset: TaskPreset, mode: ObsMode) -> gym.Env[Any, Any]:
    """``make_env`` in a worker process that leaves Ctrl-C and SIGTERM to its parent.

    A terminal's Ctrl-C reaches every process in the foreground group, and a job runner's SIGTERM
    (systemd, Slurm, ``kill -TERM -PGID``) often every process of the job. The parent stops training
    at a safe point and then closes its workers; a worker that died of the same signal would break
    that step instead. Workers still end when told to close, when their parent dies (their pipe
    closes), and on SIGKILL. gymnasium also calls this once in the parent, to read the spaces: the
    parent keeps its handlers.
    """
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return make_env(preset, mode)


def observation_mode(spec: PolicySpec) -> ObsMode:
    """``"pixels"`` for a spec with a camera entry, ``"state"`` for a state-vector spec."""
    return "pixels" if "pixels" in spec.observation_names else "state"


def build_spec(preset: TaskPreset | str, mode: ObsMode = "pixels") -> PolicySpec:
    """The policy spec of a preset's environment: observation entries, action, timing.

    Reads the action bounds, actuator names and simulator step from the MuJoCo model itself.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    env = make_env(preset, "state")
    try:
        inner = env.unwrapped
        model = preset_handles(env, preset)[0]
        dt = float(inner.dt)  # type: ignore[attr-defined]
        action_space = env.action_space
        assert isinstance(action_space, gym.spaces.Box)
        actions = tuple(_actuator_quantity(model, i) for i in range(model.nu))
        action = ActionSpec(actions, tuple(map(float, action_space.low)), tuple(map(float, action_space.high)))
        state_shape = env.observation_space["state"].shape  # type: ignore[index]
        quantities = preset.state_quantities or state_names(env) or ()
        if state_shape != (len(quantities),):
            raise ValueError(
                f"preset {preset.name}: names {len(quantities)} state quantities, "
                f"but {preset.env_id}'s state has shape {state_shape}"
            )
        proprio = tuple(_proprio_quantity(model, e.joint, e.reading, preset) for e in preset.proprio)
    finally:
        env.close()
    k = preset.frame_stack
    if mode == "pixels":
        cam = preset.camera
        observations: tuple[ObservationSpec, ...] = (
            ObservationSpec(
                "pixels",
                "uint8",
                (preset.image_size, preset.image_size, 3 * k),
                "image",
                history=k,
                description=(
                    f"RGB {preset.image_size}x{preset.image_size}, {preset.render_quality} render quality, "
                    f"{cam.describe()}"
                ),
            ),
        )
        if proprio:  # a preset without joint readings observes camera frames alone
            observations += (
                ObservationSpec(
                    "proprio",
                    "float32",
                    (len(proprio),),
                    "vector",
                    quantities=proprio,
                    description="the robot's own joint readings",
                ),
            )
    else:
        state = tuple(Quantity(n, u) for n, u in quantities)
        observations = (
            ObservationSpec(
                "state",
                "float32",
                (len(state),),
                "vector",
                quantities=state,
                description=f"{preset.env_id} full state vector (privileged)",
            ),
        )
    return PolicySpec(
        observations=observations,
        action=action,
        control_period_s=dt * preset.action_repeat,
        action_repeat=preset.action_repeat,
        provenance=Provenance(task_preset=preset.name, env_id=preset.env_id, task_preset_sha256=preset.sha256),
    )


def _proprio_quantity(model: mujoco.MjModel, joint_name: str, reading: str, preset: TaskPreset) -> Quantity:
    joint = _joint(model, joint_name, preset)
    pos_unit, vel_unit, _ = _JOINT_UNITS[mujoco.mjtJoint(int(joint.type[0]))]
    if reading == "position":
        return Quantity(f"{joint_name}.pos", pos_unit)
    return Quantity(f"{joint_name}.vel", vel_unit)


def _actuator_quantity(model: mujoco.MjModel, index: int) -> Quantity:
    """An actuator's name (or its joint's, if it has none) and what one unit of control means."""
    actuator = model.actuator(index)
    if model.actuator_trntype[index] != mujoco.mjtTrn.mjTRN_JOINT:
        return Quantity(actuator.name or f"actuator{index}", "ctrl")
    joint = model.joint(int(model.actuator_trnid[index, 0]))
    _, _, force_unit = _JOINT_UNITS[mujoco.mjtJoint(int(joint.type[0]))]
    gear = float(model.actuator_gear[index, 0])
    return Quantity(actuator.name or joint.name, f"{gear:g} {force_unit}")
