"""The necks on spatial maps: the conv neck's frame stack, FLARE's latents and their differences."""

from __future__ import annotations

import pytest
import torch

from models.neck import ConvNeck, FlareNeck


def _maps(b: int = 4, k: int = 3, shape: tuple[int, int, int] = (8, 5, 5), seed: int = 0) -> torch.Tensor:
    return torch.randn((b, k, *shape), generator=torch.Generator().manual_seed(seed))


def test_flare_neck_sees_the_newest_latent_beside_the_differences_between_frames():
    torch.manual_seed(0)
    neck = FlareNeck(3, (8, 5, 5), latent_dim=16, channels=4)
    maps = _maps()
    out = neck(maps)
    assert out.shape == (4, 16)
    # By hand: z_i per frame, then [z_2, z_2 - z_1, z_1 - z_0] through the shared conv and projection.
    linear = neck.per_frame[0]
    assert isinstance(linear, torch.nn.Linear)
    weight = linear.weight.detach().view(4, 8, 1, 1)  # the per-frame layer is a 1x1 convolution
    z = [torch.relu(torch.nn.functional.conv2d(maps[:, i], weight, linear.bias)) for i in range(3)]
    stacked = torch.cat([z[2], z[2] - z[1], z[1] - z[0]], dim=1)
    assert torch.allclose(out, neck.project(neck.conv(stacked).flatten(1)), atol=1e-6)


def test_a_still_scene_has_zero_flow_and_only_the_newest_frame_counts():
    torch.manual_seed(0)
    neck = FlareNeck(3, (8, 5, 5), latent_dim=16, channels=4)
    frame = _maps(k=1)
    still = frame.expand(-1, 3, -1, -1, -1)
    z = neck.per_frame(frame[:, 0].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    no_flow = torch.cat([z, torch.zeros_like(z), torch.zeros_like(z)], dim=1)
    assert torch.allclose(neck(still), neck.project(neck.conv(no_flow).flatten(1)), atol=1e-6)
    moving = still.clone()
    moving[:, 0] += 1.0  # the oldest frame differs: the flow, and so the latent, changes
    assert not torch.allclose(neck(moving), neck(still))


def test_flare_neck_depends_on_the_order_of_the_frames():
    torch.manual_seed(0)
    neck = FlareNeck(3, (8, 5, 5), latent_dim=16, channels=4)
    maps = _maps()
    assert not torch.allclose(neck(maps), neck(maps.flip(1)))


def test_flare_neck_needs_a_history_and_trains_every_weight():
    with pytest.raises(ValueError, match="at least 2 frames"):
        FlareNeck(1, (8, 5, 5), latent_dim=16)
    torch.manual_seed(0)
    neck = FlareNeck(2, (8, 5, 5), latent_dim=16, channels=4)
    neck(_maps(k=2)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in neck.parameters())


def test_the_conv_neck_and_flare_neck_map_the_same_input_to_the_same_latent_size():
    maps = _maps(k=3, shape=(40, 11, 11))
    assert ConvNeck(3, (40, 11, 11), 50)(maps).shape == FlareNeck(3, (40, 11, 11), 50)(maps).shape == (4, 50)


def test_flare_neck_reads_the_replay_cell_order_as_it_reads_a_contiguous_batch():
    torch.manual_seed(0)
    neck = FlareNeck(3, (8, 5, 5), latent_dim=16, channels=4)
    maps = _maps()
    cell_order = maps.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2)  # as the replay gives them
    assert torch.allclose(neck(cell_order), neck(maps), atol=1e-6)
