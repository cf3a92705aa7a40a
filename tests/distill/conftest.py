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


@pytest.fixture(scope="session")
def pixel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("pixels") / "run"
    # The frozen encoder as trained by default (tf_efficientnet_lite0 at the frame size, conv neck),
    # cut at stage 0 and with random weights to keep the test fast; export does not care which.
    encoder = EncoderConfig(weights="none", input_size=84, output="spatial", stage=0)
    sac = SACConfig(hidden=(16, 16), latent_dim=16)
    run(_tiny(run_dir, representation="frozen", encoder=encoder, encoder_runtime="torch", sac=sac))
    return run_dir


@pytest.fixture(scope="session")
def pixel_run_without_proprio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As ``pixel_run``, trained with ``proprio`` off: the policy ignores the spec's proprio input."""
    run_dir = tmp_path_factory.mktemp("no-proprio") / "run"
    encoder = EncoderConfig(weights="none", input_size=84, output="spatial", stage=0)
    sac = SACConfig(hidden=(16, 16), latent_dim=16)
    run(_tiny(run_dir, encoder=encoder, encoder_runtime="torch", sac=sac, proprio=False))
    return run_dir


@pytest.fixture(scope="session")
def finetuned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher with a fine-tuned last stage: stage 1 frozen, stage 2 part of the head."""
    run_dir = tmp_path_factory.mktemp("finetuned") / "run"
    encoder = EncoderConfig(weights="none", input_size=84, output="spatial", stage=2)
    sac = SACConfig(hidden=(16, 16), latent_dim=16)
    run(_tiny(run_dir, encoder=encoder, encoder_runtime="torch", sac=sac, finetune_last_stage=True))
    return run_dir


@pytest.fixture(scope="session")
def state_observations() -> dict[str, np.ndarray]:
    return collect_observations("inverted_pendulum", "state", 256, seed=3)
