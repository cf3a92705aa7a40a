"""The frozen timm encoder: offline ImageNet weights, frozen and in eval mode, honest shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.catalog import DEFAULT_ENCODER, EMBEDDED
from models.config import EncoderConfig
from models.encoder import FrozenEncoder
from models.weights import WeightsError, create_timm_model


@pytest.fixture(scope="module")
def pooled() -> FrozenEncoder:
    return FrozenEncoder(EncoderConfig())  # tf_efficientnet_lite0, embedded weights, native 224


def test_embedded_weights_classify_imagenet_images_offline(pooled, monkeypatch):
    # Check from shared/FACTS.md: with the packaged weights, scikit-image's chelsea is class 285
    # (Egyptian cat) and coffee class 967 (espresso). Frames go through the encoder's own uint8 path.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _classifies_chelsea_and_coffee(pooled, certainty=0.5)


@pytest.mark.parametrize("name", sorted(set(EMBEDDED) - {DEFAULT_ENCODER}))
def test_every_other_embedded_model_classifies_them_too(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Lite1 is less sure of the cat (p = 0.43 at its native 240) but right; a wrong pairing gives noise.
    _classifies_chelsea_and_coffee(FrozenEncoder(EncoderConfig(name=name, weights="embedded")), certainty=0.3)


def _classifies_chelsea_and_coffee(encoder: FrozenEncoder, certainty: float) -> None:
    data = pytest.importorskip("skimage.data")
    classifier: nn.Module = encoder.backbone.get_classifier()  # type: ignore[operator]
    for image, label in ((data.chelsea(), 285), (data.coffee(), 967)):
        frames = torch.from_numpy(np.ascontiguousarray(image))[None]
        probs = classifier(encoder(frames)).softmax(-1)[0]
        assert int(probs.argmax()) == label
        assert float(probs[label]) > certainty


def test_encoder_is_frozen_and_stays_in_eval_mode(pooled):
    parent = nn.Sequential(pooled, nn.Linear(1280, 4))
    parent.train()
    assert parent[1].training
    assert not any(m.training for m in pooled.backbone.modules())
    assert not any(p.requires_grad for p in pooled.parameters())
    bn_stats = {k: v.clone() for k, v in pooled.backbone.state_dict().items() if "running" in k}
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    out = parent(frames)
    out.sum().backward()  # gradients reach the head, never the encoder
    assert parent[1].weight.grad is not None
    assert all(p.grad is None for p in pooled.parameters())
    for key, value in pooled.backbone.state_dict().items():
        if key in bn_stats:
            assert torch.equal(value, bn_stats[key]), f"BatchNorm statistic {key} changed in train mode"


@pytest.mark.parametrize(
    ("config", "frame_hw", "expected"),
    [
        (EncoderConfig(weights="none", input_size=84), (84, 84), (1280,)),
        # stride 8 at 112 pixels: 112 / 8 = 14
        (EncoderConfig(weights="none", output="spatial", stage=2, input_size=112), (84, 84), (40, 14, 14)),
        # stride 16 at 96 pixels: 96 / 16 = 6
        (EncoderConfig(weights="none", output="spatial", stage=3, input_size=96), (64, 80), (112, 6, 6)),
    ],
)
def test_output_shape_is_reported_and_true(config, frame_hw, expected):
    encoder = FrozenEncoder(config)
    assert encoder.output_shape(frame_hw) == expected
    frames = torch.randint(0, 256, (3, *frame_hw, 3), dtype=torch.uint8)
    assert tuple(encoder(frames).shape) == (3, *expected)


def test_preprocessing_uses_the_models_data_config(pooled):
    # tf_efficientnet_lite0: mean = std = 0.5, so uint8 0 -> -1 and 255 -> +1, at 224x224.
    frames = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 8, 8, 3).contiguous()
    x = pooled.preprocess(frames)
    assert x.shape == (2, 3, 224, 224)
    torch.testing.assert_close(x[0], torch.full_like(x[0], -1.0))
    torch.testing.assert_close(x[1], torch.full_like(x[1], 1.0))


def test_bad_frames_are_refused_with_a_clear_message(pooled):
    with pytest.raises(ValueError, match=r"frames must be uint8 \(N, H, W, 3\); got torch.float32"):
        pooled(torch.zeros(1, 84, 84, 3))
    with pytest.raises(ValueError, match=r"got torch.uint8 \(1, 3, 84, 84\)"):
        pooled(torch.zeros(1, 3, 84, 84, dtype=torch.uint8))


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match=r"encoder\.output is 'map'"):
        EncoderConfig(output="map")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"encoder.stage is 9; tf_efficientnet_lite0 has stages 0..4"):
        FrozenEncoder(EncoderConfig(weights="none", output="spatial", stage=9))


def test_weights_from_a_local_file_round_trip(tmp_path):
    source = create_timm_model("tf_efficientnet_lite0", "embedded")
    path = tmp_path / "lite0.pth"
    torch.save(source.state_dict(), path)
    loaded = create_timm_model("tf_efficientnet_lite0", str(path))
    for (key, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_a_name_with_timm_s_pretrained_tag_is_a_model(tmp_path):
    # Names as timm.list_models(pretrained=True) prints them (the list `agent-runtime encoders` points to).
    tagged = create_timm_model("resnet18.a1_in1k", "none")
    path = tmp_path / "r18.pth"
    torch.save(tagged.state_dict(), path)
    create_timm_model("resnet18.a1_in1k", str(path))
    with pytest.raises(WeightsError, match=r"no pretrained weights 'resnet18.nope'; those of resnet18 are: .*a1_in1k"):
        create_timm_model("resnet18.nope", "hub")  # refused before any download is tried
    with pytest.raises(WeightsError, match=r"timm has no model called 'not_a_model\.a1_in1k'"):
        create_timm_model("not_a_model.a1_in1k", "none")


def test_weight_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="timm has no model called 'not_a_model'"):
        create_timm_model("not_a_model")
    with pytest.raises(WeightsError, match="no embedded weights for 'resnet18'"):
        create_timm_model("resnet18", "embedded")
    with pytest.raises(WeightsError, match="neither auto, embedded, hub, none nor an existing file"):
        create_timm_model("resnet18", str(tmp_path / "missing.pth"))
    bad = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(WeightsError, match=r"could not load .*wrong\.pth into timm model 'resnet18'"):
        create_timm_model("resnet18", str(bad))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("timm.create_model", offline)
    with pytest.raises(WeightsError, match="could not get weights for 'resnet18' from the model hub"):
        create_timm_model("resnet18", "hub")


def test_a_vision_transformer_is_built_for_the_input_size_it_is_given():
    # A ViT's patch grid is fixed when it is built: at 84x84 it is rebuilt for 84 (a 5x5 grid of 16-px
    # patches), where the 224x224 model would reject the frames.
    encoder = FrozenEncoder(
        EncoderConfig(name="vit_tiny_patch16_224", weights="none", input_size=84, output="spatial", stage=2)
    )
    assert encoder.output_shape((84, 84)) == (192, 5, 5)
    assert FrozenEncoder(EncoderConfig(name="vit_tiny_patch16_224", weights="none", input_size=84)).output_shape(
        (64, 64)
    ) == (192,)


def test_a_model_that_cannot_encode_the_frames_says_which_and_at_what_size(monkeypatch):
    encoder = FrozenEncoder(EncoderConfig(name="resnet18", weights="none", input_size=32, output="spatial", stage=1))

    def refuses(*args, **kwargs):
        raise AssertionError("Input height (32) doesn't match model (224).")

    monkeypatch.setattr(encoder.backbone, "forward_intermediates", refuses)
    with pytest.raises(ValueError, match=r"resnet18@32/stage1 cannot encode 84x84 frames resized to 32x32"):
        encoder.output_shape((84, 84))
