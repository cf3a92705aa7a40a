"""The encoder's last stage in the head: the split computes the same function; fine-tuning trains only the
stage's weights, PIE-G's statistics only its BatchNorm statistics."""

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
        (EncoderConfig(name="vit_tiny_patch16_224", output="spatial", stage=2, weights="none"), "transformer"),
    ],
)
def test_unsupported_splits_are_refused_with_a_reason(config, message):
    with pytest.raises(ValueError, match=message):
        split_last_stage(config)


def test_pie_g_statistics_follow_the_batches_while_the_weights_stay_frozen():
    config = dataclasses.replace(CONFIG, weights="none")
    _, stage = split_last_stage(config, train_weights=False, update_statistics=True)
    head = ObservationHead("frozen", 3, (24, 16, 16), 2, 8, "conv", last_stage=stage)
    assert not any(p.requires_grad for p in stage.parameters())
    norms = [m for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    head.train()
    assert norms and all(m.training for m in norms)
    assert not any(m.training for m in stage.modules() if not isinstance(m, torch.nn.BatchNorm2d) and m is not stage)
    before = [torch.as_tensor(m.running_mean).clone() for m in norms]
    maps = torch.randn(4, 3, 24, 16, 16) * 3 + 1
    head(maps, torch.zeros(4, 2)).sum().backward()
    assert all(p.grad is None for p in stage.parameters())
    assert all(not torch.equal(torch.as_tensor(m.running_mean), b) for m, b in zip(norms, before, strict=True))
    # Acting (eval mode) uses the running statistics: the same input, the same answer, nothing updated.
    head.eval()
    assert not any(m.training for m in norms)
    kept = [torch.as_tensor(m.running_mean).clone() for m in norms]
    with torch.no_grad():
        assert torch.equal(head(maps, torch.zeros(4, 2)), head(maps, torch.zeros(4, 2)))
    assert all(torch.equal(torch.as_tensor(m.running_mean), k) for m, k in zip(norms, kept, strict=True))


def test_statistics_to_update_need_a_stage_with_batchnorm(monkeypatch):
    import models.last_stage as last_stage

    real = last_stage.create_timm_model

    def without_batchnorm(name, weights="auto", **kwargs):
        model = real(name, weights, **kwargs)
        for module in list(model.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(module, child_name, torch.nn.Identity())
        return model

    monkeypatch.setattr(last_stage, "create_timm_model", without_batchnorm)
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        split_last_stage(dataclasses.replace(CONFIG, weights="none"), update_statistics=True)
