"""The agent runtime: the policy spec, and (as they arrive) the wire protocol, server, client and loop.

Imports only numpy, pyzmq, onnxruntime and msgpack, so a robot host can install just the runtime.
"""

from agent_runtime.spec import (
    SPEC_FORMAT_VERSION,
    ActionSpec,
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
    "ObservationError",
    "ObservationSpec",
    "PolicySpec",
    "Provenance",
    "Quantity",
    "SpecError",
    "SpecMismatchError",
]
