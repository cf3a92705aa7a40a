"""Real observations from a task: step its environment with a given policy or random actions.

Export checks parity on these, and they are what a deployed policy meets: stacked camera frames
exactly as ``train.envs.make_env`` renders them, not synthetic noise.
"""

from __future__ import annotations

import numpy as np

from distill.actors import Actor
from train.envs import make_env
from train.presets import ObsMode


def collect_observations(
    preset: str, mode: ObsMode, count: int, seed: int, actor: Actor | None = None
) -> dict[str, np.ndarray]:
    """Step the preset's environment until ``count`` observations were seen.

    Every observation counts: each episode's first (after reset), every step's, and its last. A new
    episode starts when one ends; episode ``i`` resets with seed ``seed + i``, so a collection is
    reproducible.

    Args:
        preset: task preset name.
        mode: ``"pixels"`` or ``"state"``, as in ``make_env``.
        count: observations to collect.
        seed: seed of the episodes and of the random actions.
        actor: chooses the actions; ``None`` draws them uniformly within the bounds.

    Returns:
        Entry name -> array with a batch axis first, e.g. ``pixels`` uint8 (count, H, W, 3k) and
        ``proprio`` float32 (count, P), or ``state`` float32 (count, S).

    Raises:
        RuntimeError: every camera frame was black (the renderer is broken, see shared/FACTS.md),
            which would make a parity check on them meaningless.
    """
    if count < 1:
        raise ValueError(f"count is {count}; collect at least one observation")
    rng = np.random.default_rng(seed)
    env = make_env(preset, mode)
    seen: list[dict[str, np.ndarray]] = []
    try:
        low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
        episode = 0
        observation, _ = env.reset(seed=seed)
        seen.append(observation)
        while len(seen) < count:
            action = actor(observation) if actor is not None else rng.uniform(low, high).astype(np.float32)
            observation, _, terminated, truncated, _ = env.step(action)
            seen.append(observation)
            if (terminated or truncated) and len(seen) < count:
                episode += 1
                observation, _ = env.reset(seed=seed + episode)
                seen.append(observation)
    finally:
        env.close()
    batch = {name: np.stack([obs[name] for obs in seen[:count]]) for name in seen[0]}
    for name, values in batch.items():
        if values.dtype == np.uint8 and not values.any():
            raise RuntimeError(
                f"all {count} collected '{name}' frames of {preset} are black: the renderer is not working "
                "(check MUJOCO_GL=egl and that no older rendering environment is still open)"
            )
    return batch
