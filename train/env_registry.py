"""Registering a user's own gymnasium environment by its entry point, once per process.

A preset file may name ``entry_point = "package.module:EnvClass"`` beside its ``env_id``. Every
process that builds the env (the trainer, a spawned vector-env worker, a robot host) registers it
here first, so the id means the same class everywhere.
"""

from __future__ import annotations

import gymnasium as gym


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
