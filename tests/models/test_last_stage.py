"""Fine-tuning the encoder's last stage: the split computes the same function, and only the stage trains."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.config import EncoderConfig
from models.encoder import FrozenEncoder
from models.last_stage import split_last_stage
from models.policy import ObservationHead

CONFIG = EncoderConfig(output="spatial", stage=2, input_size=64)


def test_prefix_then_last_stage_equals_the_whole_encoder():
    # The embedded pretrained weights: the split must reproduce the encoder exactly, not just in shape.
    whole = FrozenEncoder(CONFIG)
    prefix_config, stage = split_last_stage(CONFIG)
    assert prefix_config == dataclasses.replace(CONFIG, stage=1)
    prefix = FrozenEncoder(prefix_config)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = whole(frames)
        got = stage(prefix(frames))
    assert prefix(frames).shape == (2, 24, 16, 16) and expected.shape == (2, 40, 8, 8)
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_stage_trains_its_weights_but_keeps_batchnorm_statistics():
    _, stage = split_last_stage(dataclasses.replace(CONFIG, weights="none"))
    head = ObservationHead("frozen", 3, (24, 16, 16), 2, 8, "conv", last_stage=stage)
    head.train()
    assert all(p.requires_grad for p in stage.parameters())
    norms = [m for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = [torch.as_tensor(m.running_mean).clone() for m in norms]
    out = head(torch.randn(4, 3, 24, 16, 16), torch.zeros(4, 2))
    out.sum().backward()
    assert out.shape == (4, 10)
    assert all(p.grad is not None for p in stage.parameters())
    assert all(torch.equal(torch.as_tensor(m.running_mean), b) for m, b in zip(norms, before, strict=True))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (EncoderConfig(output="pooled"), "needs encoder.output 'spatial'"),
        (EncoderConfig(output="spatial", stage=0), "needs encoder.stage >= 1"),
        (EncoderConfig(output="spatial", stage=9, weights="none"), "has stages 0..4"),
        (EncoderConfig(name="resnet18", output="spatial", stage=2, weights="none"), "blocks.N"),
    ],
)
def test_unsupported_splits_are_refused_with_a_reason(config, message):
    with pytest.raises(ValueError, match=message):
        split_last_stage(config)
