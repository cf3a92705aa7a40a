"""Local control: an exported ONNX policy run on the robot host itself, as the control loop's action source.

A robot host with a fast policy (a state student answers in tens of microseconds) needs no server. A
:class:`LocalPolicy` checks the policy's spec against the robot's when it is made, as a server's hello
does, and each observation against the spec as a server checks an act request; the loop then applies
the same clipping, deadlines and fallback as with a :class:`~agent_runtime.client.PolicyClient`. An
inference that returns after its tick's deadline is a miss, as a late reply is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from agent_runtime.onnx_policy import OnnxPolicy
from agent_runtime.spec import PolicySpec


class LocalPolicy:
    """An exported policy in onnxruntime in this process; ``act`` as :class:`~agent_runtime.loop.ActionSource` says.

    Args:
        path: the ``.onnx`` file made by ``agent-runtime export``.
        robot_spec: the robot's spec; the policy's must be compatible with it.
        threads: onnxruntime intra-op threads (one suits a single observation).

    Raises:
        SpecMismatchError: the policy's spec does not match the robot's (the message names every field).
    """

    def __init__(self, path: Path, robot_spec: PolicySpec, threads: int = 1) -> None:
        self.policy = OnnxPolicy(path, threads)
        self.policy.spec.check_compatible(robot_spec, ours=f"policy {path}", theirs="robot")
        self._names = self.policy.spec.observation_names

    @property
    def spec(self) -> PolicySpec:
        """The policy's spec, read from its file."""
        return self.policy.spec

    def act(self, observation: Mapping[str, np.ndarray], deadline: float) -> np.ndarray:
        """The action for one observation (checked against the spec first); the loop judges ``deadline``."""
        self.policy.spec.check_observation(observation)
        batch = {name: np.asarray(observation[name])[None] for name in self._names}
        answer = np.asarray(self.policy.infer(batch)[0], dtype=np.float32)
        return answer[0] if answer.ndim == 2 else answer  # a chunked policy re-plans at every step here
