"""The agent runtime, what a robot host runs: the policy spec, the wire protocol, server, client and loop.

Imports only numpy, pyzmq, onnxruntime and msgpack, and no other package of this project, so a robot
host can install just the runtime. The ``agent-runtime`` command lives above every stage, in ``pipeline``.
"""

from agent_runtime.spec import (
    SPEC_FORMAT_VERSION,
    ActionSpec,
    NonFiniteObservationError,
    ObservationError,
    ObservationSpec,
    PolicySpec,
    Provenance,
    Quantity,
    SpecError,
    SpecMismatchError,
)

__all__ = [
    "SPEC_FORMAT_VERSION",
    "ActionSpec",
    "NonFiniteObservationError",
    "ObservationError",
    "ObservationSpec",
    "PolicySpec",
    "Provenance",
    "Quantity",
    "SpecError",
    "SpecMismatchError",
]
