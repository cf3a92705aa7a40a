"""From environment observations to what the replay stores and the agent acts on.

One *frame* per environment step: the frozen encoder's features of the newest camera frame (half
precision), the newest raw camera frame (from-scratch baseline), or the state vector. The frozen
encoder runs once per step, batched across the vector environments; the frame history is kept at
the feature level, per environment lane, so no frame is ever encoded twice.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from models.encoder import FrozenEncoder
from models.policy_kinds import Representation

Encode = Callable[[np.ndarray], np.ndarray]
"""uint8 frames (N, H, W, 3) -> float features (N, ...): a frozen encoder, in torch or onnxruntime."""


def torch_encode(encoder: FrozenEncoder, device: torch.device | None = None) -> Encode:
    """The frozen encoder as an :data:`Encode` function running in torch, on ``device`` (its own by default).

    On another device it runs a copy, so ``encoder`` itself stays where it is (a checkpoint saves it).
    """
    module = encoder if device is None or device == encoder.scale.device else copy.deepcopy(encoder).to(device)
    on = module.scale.device

    def encode(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(frames)).to(on)).cpu().numpy()

    return encode


FRAME_DTYPES: dict[str, str] = {"frozen": "float16", "scratch": "uint8", "state": "float32"}


def frame_dtype(representation: Representation) -> str:
    """Dtype of a stored frame: half-precision features, uint8 camera frames, or float32 state vectors."""
    return FRAME_DTYPES[representation]


class FrameSource:
    """Turns batched observations into frames, and keeps each lane's frame history for acting.

    Args:
        representation: ``frozen``, ``scratch`` or ``state``.
        history: frames per observation (``k``; 1 for state vectors, see ``train.teacher.history``).
        lanes: number of environments.
        encode: the frozen encoder (``frozen`` only).
    """

    def __init__(self, representation: Representation, history: int, lanes: int, encode: Encode | None) -> None:
        if (representation == "frozen") != (encode is not None):
            raise ValueError("a frozen encoder is needed exactly for the 'frozen' representation")
        self.representation, self.encode, self.lanes, self.history = representation, encode, lanes, history
        self._stack: np.ndarray | None = None  # (lanes, k, *frame_shape)

    def frames(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The newest frame of each observation in a batch: (B, *frame_shape)."""
        if self.representation == "state":
            return obs["state"].astype(np.float32, copy=False)
        newest = np.ascontiguousarray(obs["pixels"][..., -3:])
        if self.encode is None:
            return newest
        return self.encode(newest).astype(np.float16)

    @staticmethod
    def proprio(obs: dict[str, np.ndarray]) -> np.ndarray:
        """The proprio vectors of a batch, float32 (B, P); empty (B, 0) in state mode or without joint readings."""
        if "proprio" in obs:
            return obs["proprio"].astype(np.float32, copy=False)
        return np.zeros((len(next(iter(obs.values()))), 0), dtype=np.float32)

    def reset_lanes(self, lanes: np.ndarray, frames: np.ndarray) -> None:
        """Start the history of ``lanes`` afresh: ``k`` copies of their first frame."""
        if self._stack is None:
            self._stack = np.zeros((self.lanes, self.history, *frames.shape[1:]), dtype=frames.dtype)
        self._stack[lanes] = frames[:, None]

    def push(self, frames: np.ndarray) -> None:
        """Append every lane's newest frame, dropping its oldest."""
        if self._stack is None:
            raise RuntimeError("reset_lanes must come before push")
        self._stack[:, :-1] = self._stack[:, 1:]
        self._stack[:, -1] = frames

    def stacked(self) -> np.ndarray:
        """Every lane's frame history, (lanes, k, *frame_shape), oldest first."""
        if self._stack is None:
            raise RuntimeError("reset_lanes must come before stacked")
        return self._stack
