"""The environment under a task preset: made, registered, and opened up to its MuJoCo model.

Two kinds of MuJoCo env sit under presets: gymnasium's own (``Hopper-v5``, a user's env by entry
point) and DeepMind Control Suite tasks through shimmy (``dm_control/cheetah-run-v0``). Both hold a
MuJoCo model and data, which is all the renderer and the proprio readings need; ``mujoco_handles``
finds them in either. DMC's observations are dicts; ``make_base_env`` flattens them into the state
vector (keys in sorted order, as gymnasium's ``Dict`` space holds them).

A preset file may name ``entry_point = "package.module:EnvClass"`` beside its ``env_id``. Every
process that builds the env (the trainer, a spawned vector-env worker, a robot host) registers it
here first, so the id means the same class everywhere.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from train.render import load_triton_before_gl
from train.task_preset import TaskPreset

_NAMESPACE_MODULES = {"dm_control": "shimmy"}
"""gymnasium id namespaces whose ids a package registers when imported (imported only when used)."""


def ensure_registered(env_id: str, entry_point: str | None) -> None:
    """Register ``env_id`` with ``entry_point`` unless gymnasium already has it that way.

    Raises:
        ValueError: ``env_id`` is already registered with a different entry point.
    """
    if entry_point is None:
        return
    known = gym.registry.get(env_id)
    if known is None:
        gym.register(id=env_id, entry_point=entry_point)
        return
    if known.entry_point != entry_point:
        raise ValueError(
            f"environment id {env_id!r} is already registered with entry point {known.entry_point!r}, not "
            f"{entry_point!r}; give your env an id of its own (env_id in the preset file)"
        )


def make_base_env(preset: TaskPreset) -> gym.Env[Any, Any]:
    """The preset's env as gymnasium makes it, its observation a flat float vector.

    Raises:
        ValueError: from ``ensure_registered``; whatever ``gym.make`` raises passes through.
    """
    ensure_registered(preset.env_id, preset.entry_point)
    namespace = preset.env_id.partition("/")[0] if "/" in preset.env_id else None
    if namespace in _NAMESPACE_MODULES:
        load_triton_before_gl()  # dm_control loads EGL at import; triton imported after that crashes
        importlib.import_module(_NAMESPACE_MODULES[namespace])  # registers the namespace's ids on import
    env: gym.Env[Any, Any] = gym.make(preset.env_id, **preset.make_kwargs())
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    return env


def mujoco_handles(env: gym.Env[Any, Any]) -> tuple[mujoco.MjModel, mujoco.MjData] | None:
    """The MuJoCo model and data under ``env``: gymnasium's MuJoCo envs', or dm_control's physics'.

    ``None`` for an env that is not MuJoCo.
    """
    inner = env.unwrapped
    model, data = getattr(inner, "model", None), getattr(inner, "data", None)
    if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
        return model, data
    physics = getattr(inner, "physics", None)  # shimmy's DmControlCompatibilityV0 forwards to the dm_control env
    if physics is not None:
        model, data = getattr(physics.model, "ptr", None), getattr(physics.data, "ptr", None)
        if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
            return model, data
    return None


def state_names(env: gym.Env[Any, Any]) -> tuple[tuple[str, str], ...] | None:
    """Names of a flattened dict observation: ``"key[i]"``, or ``"key"`` for a scalar.

    Units are empty: the suite's observations mix them (positions, cosines, velocities, touch). ``None``
    where the env's own observation is not a dict.
    """
    space = env.unwrapped.observation_space
    if not isinstance(space, gym.spaces.Dict):
        return None
    names: list[tuple[str, str]] = []
    for key, sub in space.spaces.items():
        size = int(np.prod(sub.shape)) if sub.shape else 1
        names += [(key, "")] if size == 1 and not sub.shape else [(f"{key}[{i}]", "") for i in range(size)]
    return tuple(names)
