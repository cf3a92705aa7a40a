"""The from-scratch DrQ-v2 encoder: channels-last layout, same function as the plain NCHW stacking."""

from __future__ import annotations

import torch

from models.scratch_encoder import ScratchConvEncoder


def test_channels_last_input_computes_the_plain_stacked_frames_function():
    torch.manual_seed(0)
    encoder = ScratchConvEncoder(frames=3, image_size=84)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in encoder.net.parameters() if p.ndim == 4)
    frames = torch.randint(0, 256, (4, 3, 84, 84, 3), dtype=torch.uint8)  # (B, k, H, W, RGB)
    # The reference layout: channel 3 * i + c is colour c of frame i, oldest frame first, in NCHW.
    plain = frames.permute(0, 1, 4, 2, 3).reshape(4, 9, 84, 84).float() / 255.0 - 0.5
    reference = encoder.net.to(memory_format=torch.contiguous_format)(plain).flatten(1).unsqueeze(1)
    encoder.net.to(memory_format=torch.channels_last)
    out = encoder(frames)
    assert out.shape == (4, 1, encoder.out_features)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
