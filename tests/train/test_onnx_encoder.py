"""The onnxruntime copy of the frozen encoder computes what torch computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.config import EncoderConfig
from models.encoder import FrozenEncoder
from train.envs import make_env
from train.onnx_encoder import PARITY_ATOL, OnnxEncoder


def test_onnxruntime_encoder_matches_torch_on_real_frames(tmp_path):
    encoder = FrozenEncoder(EncoderConfig(weights="embedded", input_size=112))
    env = make_env("reacher", "pixels")
    frames = []
    try:
        env.reset(seed=0)
        for _ in range(6):
            obs, *_ = env.step(env.action_space.sample())
            frames.append(obs["pixels"][..., -3:])
    finally:
        env.close()
    batch = np.stack(frames)
    onnx = OnnxEncoder(encoder, tmp_path / "encoder.onnx", (84, 84), threads=1)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(batch)).numpy()
    got = onnx(batch)
    assert got.shape == expected.shape == (6, 1280)
    assert np.abs(got - expected).max() <= PARITY_ATOL
    assert onnx(batch[:1]).shape == (1, 1280)  # dynamic batch axis


def test_shrinking_encoders_that_cannot_export_say_what_to_do(tmp_path, capfd):
    encoder = FrozenEncoder(EncoderConfig(weights="none", input_size=64))
    with pytest.raises(RuntimeError) as info:
        OnnxEncoder(encoder, tmp_path / "encoder.onnx", (84, 96), threads=1)
    assert str(info.value) == (
        "frames of 84x96 are shrunk to the encoder's input size 64 with antialiasing, which does not export to "
        "ONNX; give the encoder an input size of at least 96 (--encoder.input-size 96), or render frames of at "
        "most 64 pixels (the preset's image_size)"
    )
    assert capfd.readouterr().out == ""  # refused before the exporter, which prints its whole graph when it fails
    assert encoder.export_problem(64, 64) is None and encoder.export_problem(32, 48) is None  # enlarging exports
    OnnxEncoder(encoder, tmp_path / "encoder.onnx", (48, 48), threads=1)
