"""The SAC update: what it changes, what it must not, and that a seed fixes it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from train.config import TrainConfig
from train.replay import Batch
from train.sac import SAC
from train.teacher import build_learner


class _Encoder:  # build_head only needs the feature shape
    def __init__(self, shape):
        self.shape = shape

    def output_shape(self, frame_hw):
        return self.shape


def _spec(mode="pixels"):
    from train.envs import build_spec

    return build_spec("inverted_pendulum", mode)


def _agent(representation="frozen", seed=0, shape=(16,), neck="linear", proprio=True) -> SAC:
    from models.config import EncoderConfig

    encoder_cfg = EncoderConfig(output="spatial" if len(shape) == 3 else "pooled")
    cfg = TrainConfig(representation=representation, seed=seed, neck=neck, encoder=encoder_cfg, proprio=proprio)
    torch.manual_seed(seed)
    mode = "state" if representation == "state" else "pixels"
    encoder: Any = _Encoder(shape) if representation == "frozen" else None
    return build_learner(cfg, _spec(mode), encoder)


def _batch(shape=(16,), dtype=np.float16, seed=0, k=3, proprio=2) -> Batch:
    rng = np.random.default_rng(seed)
    b = 8
    frames = (
        rng.standard_normal((b, k, *shape)).astype(dtype)
        if dtype != np.uint8
        else rng.integers(0, 256, (b, k, *shape), dtype=np.uint8)
    )
    next_frames = (
        rng.standard_normal((b, k, *shape)).astype(dtype)
        if dtype != np.uint8
        else rng.integers(0, 256, (b, k, *shape), dtype=np.uint8)
    )
    return Batch(
        frames=frames,
        proprio=rng.standard_normal((b, proprio)).astype(np.float32),
        action=rng.uniform(-1, 1, (b, 1)).astype(np.float32),
        reward=rng.standard_normal(b).astype(np.float32),
        discount=np.full(b, 0.97, np.float32),
        next_frames=next_frames,
        next_proprio=rng.standard_normal((b, proprio)).astype(np.float32),
    )


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_update_changes_actor_critic_and_neck_and_returns_metrics():
    agent = _agent()
    before = {name: _params(getattr(agent, name)) for name in ("actor", "critic", "head", "critic_target")}
    metrics = agent.update(_batch())
    for name in before:
        assert _changed(before[name], getattr(agent, name)), f"{name} did not change"
    assert set(metrics) >= {"loss/critic", "loss/actor", "loss/temperature", "train/alpha"}
    assert all(np.isfinite(v) for v in metrics.values())


def test_actor_loss_does_not_move_the_neck():
    agent = _agent()
    x = agent.head(torch.from_numpy(_batch().frames).float(), torch.zeros(8, 2))
    loss, _ = agent.actor_loss(x.detach())
    agent.head.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in agent.head.parameters())
    assert any(p.grad is not None for p in agent.actor.parameters())


def test_critic_loss_trains_the_neck():
    agent = _agent()
    frames = torch.from_numpy(_batch().frames).float()
    x = agent.head(frames, torch.zeros(8, 2))
    agent.critic_loss(x, torch.zeros(8, 1), torch.ones(8)).backward()
    assert all(p.grad is not None for p in agent.head.parameters())


def test_the_frozen_encoder_never_changes_in_an_update():
    from models.config import EncoderConfig
    from models.encoder import FrozenEncoder
    from train.frames import FrameSource, torch_encode

    encoder = FrozenEncoder(EncoderConfig(weights="none", input_size=32))
    before = _params(encoder)
    cfg = TrainConfig(encoder=EncoderConfig(weights="none", input_size=32), neck="linear")
    agent = build_learner(cfg, _spec(), encoder)
    source = FrameSource("frozen", 3, 8, torch_encode(encoder))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 84, 84, 9), dtype=np.uint8)
    frames = source.frames({"pixels": pixels, "proprio": np.zeros((8, 2), np.float32)})
    batch = _batch(shape=frames.shape[1:])
    agent.update(batch._replace(frames=np.repeat(frames[:, None], 3, 1), next_frames=np.repeat(frames[:, None], 3, 1)))
    assert not _changed(before, encoder)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_same_seed_same_first_updates():
    runs = []
    for _ in range(2):
        agent = _agent(seed=7)
        metrics = [agent.update(_batch(seed=i)) for i in range(3)]
        runs.append((metrics, _params(agent.actor)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    other = _agent(seed=8)
    assert other.update(_batch(seed=0)) != runs[0][0][0]


def test_conv_neck_on_spatial_features_and_state_sac_update():
    agent = _agent(shape=(8, 5, 5), neck="conv")
    assert np.isfinite(agent.update(_batch(shape=(8, 5, 5)))["loss/critic"])
    state = _agent(representation="state")
    metrics = state.update(_batch(shape=(4,), dtype=np.float32, k=1, proprio=0))
    assert np.isfinite(metrics["loss/critic"])


def test_flare_neck_trains_in_the_sac_update_and_needs_spatial_features():
    agent = _agent(shape=(8, 5, 5), neck="flare")
    before = _params(agent.head)
    assert np.isfinite(agent.update(_batch(shape=(8, 5, 5)))["loss/critic"])
    assert _changed(before, agent.head) == set(before)  # the per-frame conv, the flow conv and the projection
    from models.config import EncoderConfig

    with pytest.raises(ValueError, match="neck 'flare' needs spatial features"):
        TrainConfig(neck="flare", encoder=EncoderConfig(output="pooled"))


def test_scratch_pixels_update_trains_the_conv_encoder():
    agent = _agent(representation="scratch")
    before = _params(agent.head)
    agent.update(_batch(shape=(84, 84, 3), dtype=np.uint8))
    changed = _changed(before, agent.head)
    assert any(k.startswith("scratch.") for k in changed)


HEADS = [("scratch", (84, 84, 3), np.uint8), ("frozen", (8, 5, 5), np.float16)]


@pytest.mark.parametrize(("representation", "shape", "dtype"), HEADS)
def test_a_bfloat16_head_trains_close_to_float32_and_hands_the_critic_float32(representation, shape, dtype):
    import dataclasses

    exact = _agent(representation=representation, shape=shape, neck="conv", seed=5)
    fast = _agent(representation=representation, shape=shape, neck="conv", seed=5)
    fast.config = dataclasses.replace(fast.config, head_precision="bfloat16")
    batch = _batch(shape=shape, dtype=dtype)
    frames, proprio = torch.from_numpy(batch.frames), torch.from_numpy(batch.proprio)
    with torch.no_grad():
        reference, latent = exact._head(frames, proprio), fast._head(frames, proprio)
    assert latent.dtype == torch.float32
    assert not torch.equal(latent, reference)  # it really ran in bfloat16 ...
    assert torch.allclose(latent, reference, atol=0.05)  # ... and lost only bfloat16's precision
    before = _params(fast.head)
    exact_loss, fast_loss = exact.update(batch)["loss/critic"], fast.update(batch)["loss/critic"]
    assert fast_loss == pytest.approx(exact_loss, rel=0.05)
    assert _changed(before, fast.head) == set(before)  # every head weight learned
    assert all(p.dtype == torch.float32 for p in fast.head.parameters())  # the master weights stay float32


def test_feature_shift_augments_frozen_spatial_features_unless_turned_off():
    import dataclasses

    plain, shifted = _agent(shape=(8, 5, 5), neck="conv", seed=3), _agent(shape=(8, 5, 5), neck="conv", seed=3)
    assert shifted.config.feature_shift == 1  # the default
    plain.config = dataclasses.replace(plain.config, feature_shift=0)
    batch = _batch(shape=(8, 5, 5))
    frames = torch.from_numpy(batch.frames)
    assert torch.equal(plain._augment(frames), frames)
    assert not torch.equal(shifted._augment(frames), frames.float())
    assert plain.update(batch)["loss/critic"] != shifted.update(batch)["loss/critic"]


def test_fine_tuned_last_stage_learns_from_the_critic_only_and_the_prefix_never_changes():
    from models.config import EncoderConfig

    encoder_cfg = EncoderConfig(output="spatial", stage=2, weights="none", input_size=32)
    cfg = TrainConfig(encoder=encoder_cfg, finetune_last_stage=True, seed=0)
    from train.teacher import build_encoder

    prefix = build_encoder(cfg)
    assert prefix is not None and prefix.config.stage == 1
    agent = build_learner(cfg, _spec(), prefix)
    assert agent.head.last_stage is not None
    shape = prefix.output_shape((84, 84))  # stage-1 maps: what the replay stores
    stage_before, prefix_before = _params(agent.head.last_stage), _params(prefix)
    agent.update(_batch(shape=shape))
    assert _changed(stage_before, agent.head.last_stage), "the last stage did not train"
    assert not _changed(prefix_before, prefix)
    # Its own learning rate: the second parameter group of the critic's optimizer.
    assert [g["lr"] for g in agent.critic_opt.param_groups] == [cfg.sac.critic_lr, cfg.sac.encoder_lr]
    x = agent.head(torch.from_numpy(_batch(shape=shape).frames).float(), torch.zeros(8, 2))
    agent.head.zero_grad()
    agent.actor_loss(x.detach())[0].backward()
    assert all(p.grad is None for p in agent.head.last_stage.parameters())


def test_fine_tuning_needs_spatial_frozen_features():
    import pytest

    from models.config import EncoderConfig

    with pytest.raises(ValueError, match="finetune_last_stage needs representation 'frozen'"):
        TrainConfig(representation="state", finetune_last_stage=True)
    with pytest.raises(ValueError, match="finetune_last_stage needs"):
        TrainConfig(encoder=EncoderConfig(output="pooled"), neck="linear", finetune_last_stage=True)


def test_proprio_off_acts_from_frames_alone():
    agent = _agent(proprio=False)
    head = agent.head
    assert head.out_dim == head.neck.latent_dim  # nothing joined after the neck
    frames = torch.randn(4, 3, 16)
    same = head(frames, torch.zeros(4, 2)), head(frames, torch.randn(4, 2))  # the spec's proprio, ignored
    assert torch.equal(*same)
    assert np.isfinite(agent.update(_batch())["loss/critic"])  # the replay still stores the proprio
    with pytest.raises(ValueError, match="proprio has 3 values; this head joins 2"):
        _agent().head(frames, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="proprio off needs a pixel representation"):
        TrainConfig(representation="state", proprio=False)


def test_a_batch_goes_to_a_gpu_as_the_memory_it_is_in():
    from train.sac import memory_order

    channels_last = torch.zeros(4, 5, 6, 3, 7).permute(0, 3, 4, 1, 2)  # (B, k, C, h, w) over (B, h, w, k, C)
    order = memory_order(channels_last)
    assert order == [0, 3, 4, 1, 2] and channels_last.permute(order).is_contiguous()
    plain = torch.zeros(2, 3, 4)
    assert memory_order(plain) == [0, 1, 2]
    assert memory_order(torch.zeros(3, 1, 4)) == [0, 1, 2]  # a size-1 dimension keeps its place


def test_pie_g_statistics_update_in_the_sac_update_and_the_stage_weights_stay_frozen():
    from models.config import EncoderConfig
    from train.teacher import build_encoder

    encoder_cfg = EncoderConfig(output="spatial", stage=2, weights="none", input_size=32)
    cfg = TrainConfig(encoder=encoder_cfg, update_bn_statistics=True, seed=0)
    assert cfg.splits_last_stage
    prefix = build_encoder(cfg)
    assert prefix is not None and prefix.config.stage == 1
    agent = build_learner(cfg, _spec(), prefix)
    stage = agent.head.last_stage
    assert stage is not None and not any(p.requires_grad for p in stage.parameters())
    optimized = {id(p) for group in agent.critic_opt.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in stage.parameters()}
    statistics = {k: v.clone() for k, v in stage.state_dict().items() if "running" in k}
    weights_before = {k: v.detach().clone() for k, v in stage.named_parameters()}
    prefix_before = _params(prefix)
    agent.update(_batch(shape=prefix.output_shape((84, 84))))
    assert all(torch.equal(v, weights_before[k]) for k, v in stage.named_parameters())
    assert not _changed(prefix_before, prefix)
    after = stage.state_dict()
    assert all(not torch.equal(after[k], v) for k, v in statistics.items())

    with pytest.raises(ValueError, match="update_bn_statistics needs representation 'frozen'"):
        TrainConfig(update_bn_statistics=True, encoder=EncoderConfig(output="pooled"), neck="linear")
