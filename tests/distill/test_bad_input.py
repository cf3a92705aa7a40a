"""Every bad input is a clear error naming the problem, and leaves nothing at the target path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent_runtime.spec import SpecMismatchError
from distill.collect import collect_observations
from distill.errors import ExportError, ParityError
from distill.export import export_policy, run_export
from distill.export_config import ExportConfig
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.run_files import CHECKPOINT_NAME
from train.teacher import policy_from_checkpoint


def _nothing_written(directory: Path, out: Path) -> bool:
    """No export at ``out`` and no temporary file beside it."""
    return not out.exists() and not list(directory.glob(".*.tmp"))


@pytest.fixture
def run_copy(state_run, tmp_path) -> Path:
    """A private copy of the tiny state run, free to damage."""
    return Path(shutil.copytree(state_run, tmp_path / "run"))


def test_missing_run_directory(tmp_path):
    with pytest.raises(CheckpointError, match=r"run directory .*nowhere does not exist"):
        run_export(ExportConfig(run_dir=tmp_path / "nowhere"))
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is not a directory"):
        run_export(ExportConfig(run_dir=tmp_path / "file"))


def test_missing_checkpoint(run_copy):
    (run_copy / CHECKPOINT_NAME).unlink()
    with pytest.raises(CheckpointError, match=r"has no checkpoint \(.*latest.pt is missing\)"):
        run_export(ExportConfig(run_dir=run_copy))
    assert _nothing_written(run_copy, run_copy / "policy.onnx")


def test_truncated_checkpoint(run_copy):
    path = run_copy / CHECKPOINT_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"latest\.pt is not a readable checkpoint"):
        run_export(ExportConfig(run_dir=run_copy))
    assert _nothing_written(run_copy, run_copy / "policy.onnx")


def test_checkpoint_that_does_not_build_a_policy(run_copy):
    path = run_copy / CHECKPOINT_NAME
    payload = load_checkpoint(path)
    del payload["actor"]
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match=r"does not hold a usable policy \(KeyError"):
        run_export(ExportConfig(run_dir=run_copy))
    assert _nothing_written(run_copy, run_copy / "policy.onnx")


def test_spec_that_no_longer_matches_the_preset(run_copy):
    path = run_copy / CHECKPOINT_NAME
    payload = load_checkpoint(path)
    payload["spec"]["action"]["high"] = [2.0]  # as if the preset's actuator range had changed since
    save_checkpoint(path, payload)
    expected = r"action\.high: the preset inverted_pendulum now has \[3\.0\], the checkpoint has \[2\.0\]"
    with pytest.raises(SpecMismatchError, match=expected):
        run_export(ExportConfig(run_dir=run_copy))
    assert _nothing_written(run_copy, run_copy / "policy.onnx")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing/policy.onnx", r"missing does not exist; create the directory"),
        ("a_directory", r"it is a directory; give a file path such as"),
        ("a_file/policy.onnx", r"a_file is not a directory"),
    ],
)
def test_unwritable_export_path(state_run, tmp_path, where, message):
    (tmp_path / "a_directory").mkdir()
    (tmp_path / "a_file").write_text("")
    out = tmp_path / where
    with pytest.raises(ExportError, match=message):
        run_export(ExportConfig(run_dir=state_run, out=out))
    assert out.is_dir() if where == "a_directory" else not out.exists()
    assert not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only directories")
def test_read_only_export_directory(state_run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ExportError, match=r"cannot write .*Permission denied"):
            run_export(ExportConfig(run_dir=state_run, out=locked / "policy.onnx"))
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o755)


class _OffInOnnx(nn.Module):
    """Computes another action while being exported: the ONNX graph disagrees with torch."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        action = self.policy(observation)
        if torch.onnx.is_in_onnx_export():
            action = action + 1e-2 * observation["state"][:, :1].abs()
        return action


def test_parity_failure_names_the_worst_observation_and_keeps_the_old_file(state_run, state_observations, tmp_path):
    policy, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    out = tmp_path / "policy.onnx"
    out.write_bytes(b"the previous export")
    # The injected error is 1e-2 * |slider position|: worst where the cart is farthest out.
    worst = int(np.argmax(np.abs(state_observations["state"][:, 0])))
    gap = 1e-2 * abs(float(state_observations["state"][worst, 0]))
    assert gap > 1e-4  # the collection moves the cart enough for the test to mean something
    with pytest.raises(ParityError, match=rf"disagree on observation {worst} of 256: torch gives action \[") as info:
        export_policy(_OffInOnnx(policy), spec, out, state_observations)
    assert f"max abs difference {gap:.3g} > 0.0001" in str(info.value)
    assert out.read_bytes() == b"the previous export"
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_tolerance_is_a_hard_limit(state_run, state_observations, tmp_path):
    policy, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    measured = export_policy(policy, spec, tmp_path / "a.onnx", state_observations).parity
    if measured.max_abs_diff == 0:
        pytest.skip("onnxruntime is bit-exact with torch on this machine: no tolerance to undercut")
    # The measured difference itself passes; half of it fails, naming the same worst observation.
    export_policy(policy, spec, tmp_path / "b.onnx", state_observations, atol=measured.max_abs_diff)
    with pytest.raises(ParityError, match=f"disagree on observation {measured.worst_index} of 256"):
        export_policy(policy, spec, tmp_path / "c.onnx", state_observations, atol=measured.max_abs_diff / 2)
    assert _nothing_written(tmp_path, tmp_path / "c.onnx")


class _Unbounded(nn.Module):
    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        return 10.0 * observation["state"][:, :1] + 5.0


def test_actions_outside_the_bounds_are_refused(state_run, state_observations, tmp_path):
    _, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    with pytest.raises(ExportError, match=r"action 'slide' is .* outside its bounds \[-3, 3\]"):
        export_policy(_Unbounded(), spec, tmp_path / "p.onnx", state_observations)
    assert _nothing_written(tmp_path, tmp_path / "p.onnx")


class _ProprioOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        return 3.0 * torch.tanh(self.linear(observation["proprio"]))


def test_a_module_that_ignores_an_observation_entry_is_refused(pixel_run, tmp_path):
    _, spec, _ = policy_from_checkpoint(pixel_run / CHECKPOINT_NAME)
    observations = collect_observations("inverted_pendulum", "pixels", 4, seed=0)
    with pytest.raises(ExportError, match="the module does not use pixels"):
        export_policy(_ProprioOnly(), spec, tmp_path / "p.onnx", observations)
    assert _nothing_written(tmp_path, tmp_path / "p.onnx")


def test_observations_that_do_not_match_the_spec_are_refused(state_run, tmp_path):
    policy, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    wrong = {"state": np.zeros((8, 5), np.float32)}
    with pytest.raises(ValueError, match=r"observation 'state' has shape \(5,\); the policy expects \(4,\)"):
        export_policy(policy, spec, tmp_path / "p.onnx", wrong)
    assert _nothing_written(tmp_path, tmp_path / "p.onnx")


class _ShrinkWithAntialias(nn.Module):
    def forward(self, observation: dict[str, torch.Tensor]) -> torch.Tensor:
        image = observation["state"].view(-1, 1, 2, 2)
        return torch.tanh(F.interpolate(image, size=(1, 1), mode="bilinear", antialias=True).flatten(1))


def test_a_module_the_exporter_refuses(state_run, state_observations, tmp_path):
    _, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    with pytest.raises(
        ExportError, match=r"the policy cannot be exported to ONNX: .*antialiased shrinking does not export"
    ):
        export_policy(_ShrinkWithAntialias(), spec, tmp_path / "p.onnx", state_observations)
    assert _nothing_written(tmp_path, tmp_path / "p.onnx")
