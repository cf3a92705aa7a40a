"""Tiny teacher runs, made once per test session with the real training runner (a few seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distill.collect import collect_observations
from models.config import EncoderConfig
from train.config import SACConfig, TrainConfig
from train.runner import run


def _tiny(run_dir: Path, **fields: Any) -> TrainConfig:
    """No learning (it would start after the run), one short evaluation episode, no video: the run
    exists to write a real checkpoint and spec, not to train."""
    return TrainConfig(
        steps=10, learning_starts=10**6, eval_every=10**6, eval_episodes=1, video=False, threads=2, run_dir=run_dir,
        **fields,
    )  # fmt: skip


@pytest.fixture(scope="session")
def state_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("state") / "run"
    run(_tiny(run_dir, representation="state", sac=SACConfig(hidden=(16, 16))))
    return run_dir


def _pixel_run(factory: pytest.TempPathFactory, name: str, stage: int = 0, **fields: Any) -> Path:
    """A tiny frozen-pixel run: the encoder as trained by default (tf_efficientnet_lite0 at the frame
    size, conv neck), cut at ``stage`` and with random weights to keep the test fast; export does not
    care which."""
    run_dir = factory.mktemp(name) / "run"
    encoder = EncoderConfig(weights="none", input_size=84, output="spatial", stage=stage)
    sac = SACConfig(hidden=(16, 16), latent_dim=16)
    run(_tiny(run_dir, representation="frozen", encoder=encoder, encoder_runtime="torch", sac=sac, **fields))
    return run_dir


@pytest.fixture(scope="session")
def pixel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pixel_run(tmp_path_factory, "pixels")


@pytest.fixture(scope="session")
def pixel_run_without_proprio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As ``pixel_run``, trained with ``proprio`` off: the policy ignores the spec's proprio input."""
    return _pixel_run(tmp_path_factory, "no-proprio", proprio=False)


@pytest.fixture(scope="session")
def finetuned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher with a fine-tuned last stage: stage 1 frozen, stage 2 part of the head."""
    return _pixel_run(tmp_path_factory, "finetuned", stage=2, finetune_last_stage=True)


@pytest.fixture(scope="session")
def state_observations() -> dict[str, np.ndarray]:
    return collect_observations("inverted_pendulum", "state", 256, seed=3)
