"""Learning checks: slow, kept out of CI (run with `pytest -m slow`)."""

from __future__ import annotations

import pytest

from train.config import TrainConfig
from train.runner import run


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_state_sac_solves_inverted_pendulum(tmp_path):
    cfg = TrainConfig(
        preset="inverted_pendulum",
        representation="state",
        steps=30_000,  # the budget for InvertedPendulum
        eval_every=5_000,
        eval_episodes=5,
        video=False,
        run_dir=tmp_path / "run",
    )
    summary = run(cfg)
    assert summary["final_eval"]["mean"] >= 900, summary["evals"]
