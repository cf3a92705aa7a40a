"""Observations for parity come from the real task, reproducibly."""

from __future__ import annotations

import numpy as np
import torch

from distill.actors import torch_actor
from distill.collect import collect_observations


def test_collection_has_the_spec_shapes_and_repeats_with_its_seed():
    a = collect_observations("inverted_pendulum", "pixels", 40, seed=1)
    assert a["pixels"].shape == (40, 84, 84, 9) and a["pixels"].dtype == np.uint8
    assert a["proprio"].shape == (40, 2) and a["proprio"].dtype == np.float32
    assert a["pixels"].any() and len(np.unique(a["proprio"][:, 0])) > 10  # real, changing frames and states
    b = collect_observations("inverted_pendulum", "pixels", 40, seed=1)
    np.testing.assert_array_equal(a["pixels"], b["pixels"])
    np.testing.assert_array_equal(a["proprio"], b["proprio"])
    c = collect_observations("inverted_pendulum", "pixels", 40, seed=2)
    assert not np.array_equal(a["proprio"], c["proprio"])


def test_a_given_policy_chooses_the_actions():
    seen = []

    def push_right(observation):
        seen.append(observation)
        return np.array([3.0], dtype=np.float32)

    obs = collect_observations("inverted_pendulum", "state", 30, seed=0, actor=push_right)
    assert len(seen) >= 20  # episodes under a constant push are short, yet it acted on most of them
    # Pushing right at full force drives the cart right: after a step the slider moves right at more
    # than 0.5 m/s; only episode starts (reset noise within 0.01 m/s) are slower. Episodes' last
    # observations are kept: a 4-observation episode is reset, 3 pushes, the pole fallen.
    velocity = obs["state"][:, 2]
    assert ((velocity > 0.5) | (np.abs(velocity) <= 0.01)).all()
    assert (velocity > 0.5).sum() == len(seen) >= 20


def test_torch_actor_runs_a_batch_of_one():
    class Double(torch.nn.Module):
        def forward(self, batch):
            return batch["state"][:, :1] * 2

    action = torch_actor(Double())({"state": np.array([0.5, 1.0], dtype=np.float32)})
    np.testing.assert_array_equal(action, [1.0])
