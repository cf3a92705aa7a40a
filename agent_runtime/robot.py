"""The robot seam: what the control loop needs from a robot, real or simulated."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from agent_runtime.spec import PolicySpec


class Robot(Protocol):
    """A robot the control loop drives at a fixed rate.

    ``observe`` and ``apply`` are called once per control period each, so both must return well
    within it. The loop clips every action to ``spec.action``'s bounds before ``apply``.
    """

    @property
    def spec(self) -> PolicySpec:
        """What the robot observes and accepts: checked against the served policy's spec at connect."""
        ...

    def reset(self) -> None:
        """Bring the robot to its start state (called once before the loop starts)."""
        ...

    def observe(self) -> dict[str, np.ndarray]:
        """The current observation: entry name to array, one sample, exactly as ``spec`` states."""
        ...

    def apply(self, action: np.ndarray) -> None:
        """Apply one action, float32 (A,), already within the spec's bounds."""
        ...
