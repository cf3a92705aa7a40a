"""Student policies: small networks that imitate a teacher, raw observations in, bounded action out.

A student is what a robot host runs, so it holds everything between sensor and actuator: uint8
pixels are scaled inside it, and its action is squashed by tanh and scaled to the action bounds by
buffers it carries. Training works in the squashed space ``[-1, 1]`` (:meth:`normalized`), where
every action dimension weighs the same whatever its units.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.mlp import mlp


class Student(nn.Module):
    """Base of the students: the action bounds as buffers and the mapping from [-1, 1] to them.

    Args:
        action_low: lower action bounds, float (A,).
        action_high: upper action bounds, float (A,).
        chunk: actions per observation. 1: one action, (B, A); H > 1: an action chunk, (B, H, A), the
            first for the observation's own step and then one per control period (as ACT predicts).
    """

    low: torch.Tensor
    high: torch.Tensor
    observation_names: tuple[str, ...] = ()

    def __init__(self, action_low: torch.Tensor, action_high: torch.Tensor, chunk: int = 1) -> None:
        super().__init__()
        if chunk < 1:
            raise ValueError(f"chunk is {chunk}; it must be at least 1")
        self.register_buffer("low", action_low.float().clone())
        self.register_buffer("high", action_high.float().clone())
        self.chunk = chunk

    @property
    def outputs(self) -> int:
        """Numbers the network's last layer produces: chunk x action dimensions."""
        return self.chunk * int(self.low.numel())

    def shaped(self, flat: torch.Tensor) -> torch.Tensor:
        """The last layer's (B, H*A) as (B, A), or (B, H, A) for a chunk."""
        return flat if self.chunk == 1 else flat.reshape(flat.shape[0], self.chunk, -1)

    def normalized(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """The action in [-1, 1], float (B, A) or (B, H, A): what the imitation loss compares."""
        raise NotImplementedError

    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """The action within the bounds, float (B, A) or (B, H, A), for a batch of raw observations."""
        return self.low + 0.5 * (self.normalized(observation) + 1.0) * (self.high - self.low)

    def inference_form(self) -> Student:
        """The same function in cheaper operations, for export (a new module; this one is unchanged)."""
        return self


class SpatialSoftmax(nn.Module):
    """Feature maps (B, C, h, w) -> expected image coordinates of each channel (B, 2C), in [-1, 1].

    The keypoint layer of Levine et al. (2016), common in robot visuomotor policies: each channel
    becomes a soft "where", with no parameters, so the student stays small yet keeps positions.
    The coordinate grid is a constant of the map size, so the expectation is one matrix product
    (and the exported graph a handful of nodes).

    Args:
        height: h of the maps.
        width: w of the maps.
    """

    grid: torch.Tensor

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps float (B, C, h, w) -> coordinates float (B, 2C): x of every channel, then y."""
        weights = torch.softmax(maps.flatten(2), dim=-1)  # (B, C, h*w)
        return (weights @ self.grid).transpose(1, 2).flatten(1)


class ConvStudent(Student):
    """Stacked uint8 frames ``pixels`` (B, H, W, 3k) and ``proprio`` (B, P) -> action.

    Small on purpose: a robot host runs it on a CPU at control rate. The frames are average-pooled by
    ``downsample``, pass three 3x3 convolutions (strides 2, 2, 1; far fewer channels than DrQ-v2's
    encoder), and a spatial softmax turns each channel into keypoint coordinates. Proprio joins the
    keypoints before the MLP, as it joins the latent in the teacher.

    Args:
        image_shape: (H, W, 3k) of ``pixels``.
        proprio_dim: length of ``proprio`` (0 for none).
        action_low: lower action bounds.
        action_high: upper action bounds.
        channels: convolution channels.
        downsample: average-pooling factor applied to the frames first (1 keeps full resolution).
        hidden: hidden layers of the MLP after the keypoints.
        chunk: actions per observation (see :class:`Student`).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        proprio_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        channels: int = 16,
        downsample: int = 2,
        hidden: tuple[int, ...] = (48, 48),
        chunk: int = 1,
    ) -> None:
        super().__init__(action_low, action_high, chunk)
        h, w, c = image_shape
        if downsample < 1 or h // downsample < 16 or w // downsample < 16:
            raise ValueError(f"downsample is {downsample}; it must be >= 1 and leave frames of at least 16x16")
        self.pool = nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity()
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
        )
        size = (h // downsample, w // downsample)
        for stride in (2, 2, 1):  # the 3x3 convolutions' output sizes
            size = ((size[0] - 3) // stride + 1, (size[1] - 3) // stride + 1)
        self.keypoints = SpatialSoftmax(*size)
        self.head = mlp(2 * channels + proprio_dim, hidden, self.outputs)
        self.observation_names = ("pixels", "proprio") if proprio_dim else ("pixels",)
        self.downsample = downsample
        self.input_folded = False
        """True in the :meth:`inference_form`: pooling and pixel scaling live in the first convolution."""

    def normalized(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """``pixels`` uint8 (B, H, W, 3k), ``proprio`` float (B, P) -> action in [-1, 1], (B, A)."""
        x = observation["pixels"].permute(0, 3, 1, 2).float()
        if not self.input_folded:
            x = self.pool(x) / 255.0 - 0.5
        points = self.keypoints(self.conv(x))
        if "proprio" in observation:  # absent when the spec has camera frames alone
            points = torch.cat([points, observation["proprio"].float()], dim=-1)
        return self.shaped(torch.tanh(self.head(points)))

    def inference_form(self) -> ConvStudent:
        """This student with the pooling and the pixel scaling folded into its first convolution.

        Average pooling by ``d`` followed by a 3x3 convolution of stride 2 reads each output from a
        3d x 3d window of the raw frame with stride 2d, every pooled pixel's weight spread evenly over
        its d x d block; ``x / 255 - 0.5`` is linear too. So one convolution (kernel 3d, stride 2d) on
        the raw pixels computes the same maps, and the exported graph skips a pooling pass over the
        full-size frames (in onnxruntime on CPU, the costliest node of the unfolded student).
        """
        if self.input_folded:
            return self
        folded = copy.deepcopy(self)
        first = self.conv[0]
        assert isinstance(first, nn.Conv2d) and first.bias is not None
        d = self.downsample
        with torch.no_grad():
            weight = first.weight.repeat_interleave(d, dim=2).repeat_interleave(d, dim=3) / (d * d * 255.0)
            bias = first.bias - 0.5 * first.weight.sum(dim=(1, 2, 3))
            conv = nn.Conv2d(first.in_channels, first.out_channels, 3 * d, stride=2 * d)
            conv.weight.copy_(weight)
            assert conv.bias is not None
            conv.bias.copy_(bias)
        folded.conv[0] = conv
        folded.pool = nn.Identity()
        folded.input_folded = True
        return folded.eval()


class MLPStudent(Student):
    """The ``state`` vector (B, S) -> action, through an MLP.

    Args:
        state_dim: length of ``state``.
        action_low: lower action bounds.
        action_high: upper action bounds.
        hidden: hidden layer sizes.
        chunk: actions per observation (see :class:`Student`).
    """

    observation_names = ("state",)

    def __init__(
        self,
        state_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        hidden: tuple[int, ...] = (256, 256),
        chunk: int = 1,
    ) -> None:
        super().__init__(action_low, action_high, chunk)
        self.net = mlp(state_dim, hidden, self.outputs)

    def normalized(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        """``state`` float (B, S) -> action in [-1, 1], (B, A)."""
        return self.shaped(torch.tanh(self.net(observation["state"].float())))
