"""Report-card numbers: parameter counts and single-sample onnxruntime latency."""

from __future__ import annotations

from torch import nn

from distill.export import export_policy
from distill.latency import onnx_latency, parameter_counts
from train.run_files import CHECKPOINT_NAME
from train.teacher import policy_from_checkpoint


def test_parameter_counts_total_and_per_child():
    module = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    # Linear(3, 2): 3 * 2 weights + 2 biases = 8; Linear(2, 1): 2 + 1 = 3.
    assert parameter_counts(module) == {"total": 11, "0": 8, "1": 0, "2": 3}


def test_latency_of_one_sample_on_one_thread(state_run, state_observations, tmp_path):
    policy, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    export_policy(policy, spec, tmp_path / "p.onnx", state_observations)
    latency = onnx_latency(tmp_path / "p.onnx", {"state": state_observations["state"][0]}, calls=100)
    assert latency.calls == 100
    assert 0 < latency.p50_ms <= latency.p99_ms < 1000
