"""The robot seam: what the control loop needs from a robot, real or simulated."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from agent_runtime.spec import PolicySpec


class Robot(Protocol):
    """A robot the control loop drives at a fixed rate.

    ``observe`` and ``apply`` are called once per control period each, so both must return well
    within it: the tick's deadline counts from the tick, so ``observe``'s time is inside the policy's
    budget, and ``apply`` has what is left of the period. The loop clips every action to
    ``spec.action``'s bounds before ``apply``. ``reset`` may take longer: the loop measures it and
    starts the next tick after it.

    If any of these methods raises (or the loop is interrupted), the loop applies the safe action
    once (see :class:`SafeActionRobot`), logs its statistics and re-raises. When the loop returns
    normally the robot keeps its last action: stopping the robot is the caller's.
    """

    @property
    def spec(self) -> PolicySpec:
        """What the robot observes and accepts: checked against the served policy's spec at connect."""
        ...

    def reset(self) -> None:
        """Bring the robot to its start state: before the first tick, and after every episode ``apply`` ended."""
        ...

    def observe(self) -> dict[str, np.ndarray]:
        """The current observation: entry name to array, one sample, exactly as ``spec`` states.

        Numpy arrays of the spec's dtypes and shapes (``float32``, not numpy's default ``float64``);
        anything else stops the loop with :class:`~agent_runtime.loop.RobotObservationError`, while
        NaN or Inf in a float entry only misses that tick. Called once per tick, and once more after
        each ``reset`` when the action source keeps state across ticks (a chunked policy): it must
        not change the robot's state (e.g. push a frame onto a history). Return new arrays each
        time: arrays of 64 KiB or more are sent without a copy, so refilling one in place could
        change a request still in flight.
        """
        ...

    def apply(self, action: np.ndarray) -> bool | None:
        """Apply one action, float32 (A,), already within the spec's bounds (a fresh array each tick).

        Return ``True`` (any true value, a numpy bool included) when this action ended the robot's
        episode (a task done, a fall, a time limit): the loop then calls :meth:`reset` before its
        next tick (not after its last one), times the reset apart from the control period, and
        starts the new episode without any action of the old one (see :class:`SafeActionRobot`).
        ``False`` or ``None``: the episode goes on (a robot that never
        returns ``True`` runs one endless episode).
        """
        ...


@runtime_checkable
class SafeActionRobot(Protocol):
    """A robot that names its own safe action; otherwise the loop's is zero, clipped to the bounds.

    With the ``hold`` fallback, the loop applies it on a missed tick of a new episode before the
    policy's first action in it: a fallback never carries the last episode's action across a reset.
    The ``zero`` fallback applies zero, clipped to the bounds, whatever the robot defines.
    """

    def safe_action(self) -> np.ndarray:
        """The safe action, float32 (A,), within the spec's bounds.

        Read once, when the loop starts (before the first ``reset``), and used for the whole run.
        """
        ...
