"""The actor-critic's observation head, and the deployable policy: raw observation in, action out."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.actor import TanhGaussianActor
from models.encoder import FrozenEncoder
from models.last_stage import TrainableStage
from models.neck import ConvNeck, FlareNeck, IdentityNeck, LinearNeck
from models.policy_kinds import NeckKind, Representation
from models.scratch_encoder import ScratchConvEncoder


class ObservationHead(nn.Module):
    """From what the replay stores (frames with history, plus proprio) to the actor-critic input.

    Args:
        representation: see :data:`Representation`.
        history: frames per observation (``k``).
        frame_shape: one stored frame: encoder features ``(D,)`` or ``(C, h, w)``; a camera frame
            ``(H, W, 3)``; or a state vector ``(S,)``.
        proprio_dim: length of the proprio vector joined after the neck; 0 joins none, so that a head
            can ignore the proprio it is given (an ablation).
        latent_dim: the neck's output size.
        neck: ``linear``, or ``conv`` or ``flare`` (spatial features only; ``flare`` needs ``k >= 2``).
        last_stage: the encoder's last stage, trained with the neck (fine-tuning; ``frozen`` only).
            The stored frames are then the maps of the stage before it.
    """

    def __init__(
        self,
        representation: Representation,
        history: int,
        frame_shape: tuple[int, ...],
        proprio_dim: int,
        latent_dim: int,
        neck: NeckKind = "linear",
        last_stage: TrainableStage | None = None,
    ) -> None:
        super().__init__()
        self.representation = representation
        self.scratch: ScratchConvEncoder | None = None
        self.last_stage = last_stage
        if last_stage is not None:
            if representation != "frozen" or len(frame_shape) != 3:
                raise ValueError("a trainable last stage needs the frozen representation with spatial maps")
            with torch.no_grad():
                frame_shape = tuple(last_stage(torch.zeros((1, *frame_shape))).shape[1:])
        self.neck: nn.Module
        if representation == "state":
            self.neck = IdentityNeck(history * math.prod(frame_shape))
        elif representation == "scratch":
            self.scratch = ScratchConvEncoder(history, image_size=frame_shape[0])
            self.neck = LinearNeck(self.scratch.out_features, latent_dim)
        elif neck in ("conv", "flare"):
            if len(frame_shape) != 3:
                raise ValueError(f"a {neck} neck needs spatial features (C, h, w); got {frame_shape}")
            c, h, w = frame_shape
            self.neck = (ConvNeck if neck == "conv" else FlareNeck)(history, (c, h, w), latent_dim)
        else:
            self.neck = LinearNeck(history * math.prod(frame_shape), latent_dim)
        self.proprio_dim = proprio_dim
        self.out_dim = int(self.neck.latent_dim) + proprio_dim

    def forward(self, frames: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """frames: (B, k, *frame_shape), proprio: float (B, P) -> float (B, out_dim).

        P is ``proprio_dim``, or anything when that is 0: the proprio is then left out.
        """
        if proprio.shape[-1] != self.proprio_dim:
            if self.proprio_dim != 0:
                raise ValueError(f"proprio has {proprio.shape[-1]} values; this head joins {self.proprio_dim}")
            proprio = proprio[..., :0]  # sliced, not dropped: an exported graph keeps its proprio input
        x = self.scratch(frames) if self.scratch is not None else frames.float()
        if self.last_stage is not None:
            b, k = x.shape[:2]
            maps = self.last_stage(x.flatten(0, 1))
            x = maps.view(b, k, *maps.shape[1:])
        return torch.cat([self.neck(x), proprio], dim=-1)


class Policy(nn.Module):
    """Everything between the sensors and the actuators: raw observations in, bounded action out.

    Inputs follow the policy spec: ``pixels`` uint8 (B, H, W, 3k) and ``proprio`` float32 (B, P)
    (absent from a spec without joint readings), or ``state`` float32 (B, S). The output is the
    deterministic action, scaled to the action bounds.

    Args:
        head: the observation head.
        actor: the actor.
        encoder: the frozen encoder for the ``frozen`` representation, else ``None``.
        history: frames per observation (``k``).
    """

    def __init__(
        self, head: ObservationHead, actor: TanhGaussianActor, encoder: FrozenEncoder | None, history: int
    ) -> None:
        super().__init__()
        self.head, self.actor, self.encoder, self.history = head, actor, encoder, history

    def frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """Stacked uint8 pixels (B, H, W, 3k) -> what the head takes: (B, k, *frame_shape)."""
        b, h, w, _ = pixels.shape
        per_frame = pixels.view(b, h, w, self.history, 3).permute(0, 3, 1, 2, 4)  # (B, k, H, W, 3)
        if self.encoder is None:
            return per_frame
        features = self.encoder(per_frame.reshape(b * self.history, h, w, 3))
        return features.view(b, self.history, *features.shape[1:])

    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """The deterministic action for a batch of raw observations, float (B, A) within the bounds."""
        if self.head.representation == "state":
            state = observation["state"]
            x = self.head(state.unsqueeze(1), state.new_zeros((state.shape[0], 0)))
        else:
            pixels = observation["pixels"]
            proprio = observation.get("proprio")  # absent when the spec has camera frames alone
            if proprio is None:
                proprio = torch.zeros((pixels.shape[0], 0), dtype=torch.float32, device=pixels.device)
            x = self.head(self.frames(pixels), proprio)
        return self.actor.scale(self.actor.deterministic(x))
