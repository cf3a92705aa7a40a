"""The ONNX backend: its spec and signature checks, parity with a numpy reference, and file swaps."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time

import numpy as np
import pytest

from agent_runtime.onnx_policy import OnnxPolicy, PolicyFileError, watch_policy_file
from agent_runtime.protocol import Message
from tests.agent_runtime.conftest import (
    WAIT_S,
    build_onnx_policy,
    pixel_spec,
    reference_action,
    running_server,
    state_obs,
    state_spec,
)


def test_onnx_policy_reads_its_spec_and_matches_the_reference(tmp_path):
    spec = pixel_spec()
    policy = OnnxPolicy(build_onnx_policy(spec, tmp_path / "p.onnx", gain=0.02))
    assert policy.spec == spec
    rng = np.random.default_rng(0)
    batch: dict[str, np.ndarray] = {
        "pixels": rng.integers(0, 256, (5, 8, 8, 6), dtype=np.uint8),
        "proprio": rng.normal(size=(5, 2)).astype(np.float32),
    }
    actions = policy.infer(batch)
    assert actions.shape == (5, 1) and actions.dtype == np.float32
    for i in range(5):
        expected = reference_action(spec, {k: v[i] for k, v in batch.items()}, gain=0.02)
        np.testing.assert_allclose(actions[i], expected, rtol=1e-5)


def test_onnx_policy_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no policy file at"):
        OnnxPolicy(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(PolicyFileError, match="onnxruntime cannot load it"):
        OnnxPolicy(tmp_path / "junk.onnx")
    wrong = dataclasses.replace(
        state_spec(), observations=(dataclasses.replace(state_spec().observations[0], name="obs"),)
    )
    path = build_onnx_policy(state_spec(), tmp_path / "renamed.onnx", metadata=wrong.to_json())
    with pytest.raises(
        PolicyFileError,
        match=re.escape("the graph's inputs are ['state'], but its spec names the observations ['obs']"),
    ):
        OnnxPolicy(path)
    path = build_onnx_policy(state_spec(), tmp_path / "nospec.onnx", metadata="")
    with pytest.raises(ValueError, match="spec"):
        OnnxPolicy(path)


def test_a_changed_model_file_is_swapped_in_only_if_compatible(tmp_path, peer_factory, caplog):
    caplog.set_level(logging.INFO, logger="agent_runtime")
    spec = state_spec()
    model = build_onnx_policy(spec, tmp_path / "policy.onnx", gain=1.0)
    obs = state_obs(0.5)
    stop = threading.Event()
    with running_server(OnnxPolicy(model)) as server:
        watch_policy_file(model, server.swap, stop, interval_s=0.02)
        peer = peer_factory(server.endpoint)
        np.testing.assert_allclose(
            peer.request(Message("act", 1, 0.0, obs)).arrays["action"], reference_action(spec, obs)
        )
        # An incompatible file replaces it (atomically, by rename): refused, the old policy serves on.
        os.replace(build_onnx_policy(state_spec(high=2.0), tmp_path / "wide.onnx"), model)
        give_up = time.monotonic() + WAIT_S
        while "was not swapped in" not in caplog.text and time.monotonic() < give_up:
            assert_serves_reference(peer, spec, obs, gain=1.0)
        assert "action.high: the served policy has [1.0, 1.0], the new policy has [2.0, 2.0]" in caplog.text
        # A compatible one (other weights): swapped in, with no reconnection.
        os.replace(build_onnx_policy(spec, tmp_path / "v2.onnx", gain=-1.0), model)
        while "swapped in the new policy" not in caplog.text and time.monotonic() < give_up:
            peer.request(Message("act", 2, 0.0, obs))
        assert_serves_reference(peer, spec, obs, gain=-1.0)
    stop.set()


def assert_serves_reference(peer, spec, obs, gain: float) -> None:
    reply = peer.request(Message("act", 3, 0.0, obs))
    np.testing.assert_allclose(reply.arrays["action"], reference_action(spec, obs, gain=gain), rtol=1e-6)


def test_the_file_watcher_survives_a_failing_swap(tmp_path, caplog):
    """Whatever ``on_change`` raises is logged, and the next change of the file is still picked up."""
    model = build_onnx_policy(state_spec(), tmp_path / "policy.onnx")
    swapped: list[OnnxPolicy] = []
    arrived = threading.Event()

    def on_change(policy: OnnxPolicy) -> None:
        swapped.append(policy)
        arrived.set()
        if len(swapped) == 1:
            raise RuntimeError("the server refused in an unexpected way")

    stop = threading.Event()
    watcher = watch_policy_file(model, on_change, stop, interval_s=0.02)
    try:
        for gain in (2.0, 3.0):
            arrived.clear()
            os.replace(build_onnx_policy(state_spec(), tmp_path / f"v{gain}.onnx", gain=gain), model)
            assert arrived.wait(WAIT_S), f"the change to gain {gain} was never picked up"
    finally:
        stop.set()
        watcher.join(WAIT_S)
    assert len(swapped) == 2
    assert "the server refused in an unexpected way" in caplog.text and "was not swapped in" in caplog.text
