"""DrQ's random shift, on pixels and on frozen feature maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.scratch_encoder import random_shift, random_shift_features, shift_maps


def _crops(maps: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop a shift of at most ``pad`` can produce from one (C, H, W) map."""
    h, w = maps.shape[-2:]
    padded = F.pad(maps[None], (pad, pad, pad, pad), mode="replicate")[0]
    return [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]


def test_shift_maps_takes_one_replicate_padded_crop_per_sample():
    g = torch.Generator().manual_seed(0)
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    shifted = shift_maps(maps, 1, g)
    assert shifted.shape == maps.shape
    for sample, original in zip(shifted, maps, strict=True):
        # All channels of a sample move together: the whole (C, H, W) block is one of the 9 crops.
        assert any(torch.equal(sample, crop) for crop in _crops(original, 1))


@pytest.mark.parametrize(("h", "w", "pad"), [(5, 8, 1), (3, 11, 2), (4, 6, 5)], ids=["wide", "wider", "pad-beyond-map"])
def test_all_three_shifts_take_padded_crops_of_non_square_maps(h, w, pad):
    g = torch.Generator().manual_seed(h * w)
    maps = torch.randn(12, 2, h, w)
    for sample, original in zip(shift_maps(maps, pad, g), maps, strict=True):
        assert any(torch.equal(sample, crop) for crop in _crops(original, pad))
    features = torch.randn(12, 2, 3, h, w).half()
    for sample, original in zip(random_shift_features(features, pad, g).float(), features.float(), strict=True):
        crops = _crops(original.reshape(6, h, w), pad)
        assert any(torch.equal(sample.reshape(6, h, w), crop) for crop in crops)
    frames = torch.randint(0, 256, (12, 2, h, w, 3), dtype=torch.uint8, generator=g)
    for sample, original in zip(random_shift(frames, pad, g), frames, strict=True):
        crops = _crops(original.permute(0, 3, 1, 2).reshape(6, h, w).float(), pad)
        assert any(torch.equal(sample.permute(0, 3, 1, 2).reshape(6, h, w).float(), crop) for crop in crops)


def test_shift_maps_with_pad_zero_is_the_identity():
    maps = torch.randn(3, 2, 5, 5)
    assert torch.equal(shift_maps(maps, 0), maps)


def test_shifts_differ_between_samples_and_repeat_with_the_seed():
    maps = torch.arange(64 * 8 * 8, dtype=torch.float32).view(64, 1, 8, 8) % 8 * 10 + torch.arange(8).view(8, 1)
    a = shift_maps(maps, 2, torch.Generator().manual_seed(3))
    b = shift_maps(maps, 2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # 64 samples, 25 possible shifts: they cannot all have drawn the same one.
    assert len({tuple(s.flatten()[:16].tolist()) for s in a}) > 1


def test_random_shift_of_frames_keeps_uint8_layout_and_moves_all_frames_together():
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (4, 3, 6, 6, 3), dtype=torch.uint8, generator=g)
    shifted = random_shift(frames, 2, g)
    assert shifted.dtype == torch.uint8 and shifted.shape == frames.shape
    for sample, original in zip(shifted, frames, strict=True):
        as_maps = original.permute(0, 3, 1, 2).reshape(9, 6, 6).float()
        got = sample.permute(0, 3, 1, 2).reshape(9, 6, 6).float()
        assert any(torch.equal(got, crop) for crop in _crops(as_maps, 2))


def test_random_shift_of_features_shifts_the_whole_history_by_one_offset():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(5, 3, 4, 6, 6).half()
    shifted = random_shift_features(features, 1, g)
    # Half precision stays half precision: the head converts once, with no extra copy here.
    assert shifted.dtype == torch.float16 and shifted.shape == (5, 3, 4, 6, 6)
    for sample, original in zip(shifted.float(), features.float(), strict=True):
        assert any(torch.equal(sample.reshape(12, 6, 6), crop) for crop in _crops(original.reshape(12, 6, 6), 1))


def test_feature_shift_and_map_shift_agree_for_the_same_draws():
    features = torch.randn(16, 2, 3, 5, 7)
    by_cell = random_shift_features(features, 2, torch.Generator().manual_seed(4))
    by_channel = shift_maps(features.reshape(16, 6, 5, 7), 2, torch.Generator().manual_seed(4))
    assert torch.equal(by_cell.reshape(16, 6, 5, 7), by_channel)


def test_every_offset_up_to_pad_is_drawn_and_nothing_further():
    # A map whose cells hold their own coordinates shows the offset each sample drew.
    h = w = 9
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).float()
    shifted = shift_maps(coords.expand(400, 2, h, w), 2, torch.Generator().manual_seed(0))
    offsets = {(int(s[0, 4, 4]) - 4, int(s[1, 4, 4]) - 4) for s in shifted}
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
