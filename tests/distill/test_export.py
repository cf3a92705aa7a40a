"""Export: one ONNX file with the contract's inputs and output, the spec inside, parity with torch."""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import numpy as np
import onnx
import pytest
import torch

from agent_runtime.spec import (
    ONNX_ACTION_OUTPUT,
    ONNX_SPEC_KEY,
    ONNX_SPEC_VERSION_KEY,
    PolicySpec,
    spec_from_onnx_metadata,
)
from distill.export import export_policy, run_export, summary_text
from distill.export_config import ExportConfig
from distill.onnx_contract import weights_sha256
from distill.parity import PARITY_ATOL
from pipeline.cli import main
from train.onnx_io import ONNX_OPSET, cpu_session
from train.run_files import CHECKPOINT_NAME
from train.teacher import policy_from_checkpoint


@pytest.fixture(scope="module")
def pixel_export(pixel_run):
    summary = run_export(ExportConfig(run_dir=pixel_run, collect_with="random", latency_calls=20))
    return pixel_run, summary


def _dims(value: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_pixel_teacher_exports_everything_from_sensor_to_actuator(pixel_export):
    run_dir, summary = pixel_export
    path = run_dir / "policy.onnx"
    assert summary["onnx"] == str(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == ONNX_OPSET == summary["opset"]
    assert [(i.name, i.type.tensor_type.elem_type, _dims(i)) for i in model.graph.input] == [
        ("pixels", onnx.TensorProto.UINT8, ["batch", 84, 84, 9]),
        ("proprio", onnx.TensorProto.FLOAT, ["batch", 2]),
    ]
    assert [(o.name, o.type.tensor_type.elem_type, _dims(o)) for o in model.graph.output] == [
        (ONNX_ACTION_OUTPUT, onnx.TensorProto.FLOAT, ["batch", 1])
    ]
    parity = summary["parity"]
    assert parity["observations"] == 256 and parity["max_abs_diff"] <= PARITY_ATOL
    assert summary["parameters"]["total"] == sum(v for k, v in summary["parameters"].items() if k != "total")
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    assert "parity: onnxruntime matches torch" in summary_text(summary)


def test_dynamic_batch_matches_torch_on_raw_uint8_frames(pixel_export):
    run_dir, _ = pixel_export
    policy, _, _ = policy_from_checkpoint(run_dir / CHECKPOINT_NAME)
    session = cpu_session(run_dir / "policy.onnx", threads=1)
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        feed = {
            "pixels": rng.integers(0, 256, (batch, 84, 84, 9), dtype=np.uint8),
            "proprio": rng.normal(size=(batch, 2)).astype(np.float32),
        }
        (action,) = session.run([ONNX_ACTION_OUTPUT], feed)
        with torch.no_grad():
            expected = policy({k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        assert action.shape == (batch, 1) and action.dtype == np.float32
        np.testing.assert_allclose(action, expected, atol=PARITY_ATOL, rtol=0)
        assert (np.abs(action) <= 3.0).all()  # inverted_pendulum's bounds


def test_spec_travels_in_the_metadata_with_the_weights_hash(pixel_export):
    run_dir, summary = pixel_export
    metadata = cpu_session(run_dir / "policy.onnx", threads=1).get_modelmeta().custom_metadata_map
    loaded = spec_from_onnx_metadata(metadata)
    recorded = PolicySpec.from_json((run_dir / "spec.json").read_text())
    assert loaded == recorded.with_provenance(model_sha256=summary["weights_sha256"])
    assert metadata[ONNX_SPEC_VERSION_KEY] == str(loaded.format_version) == "1"
    assert loaded.provenance.model_sha256 == weights_sha256(onnx.load(str(run_dir / "policy.onnx")))
    assert ONNX_SPEC_KEY in metadata


def test_the_runtime_server_backend_accepts_the_file(pixel_export):
    onnx_policy = pytest.importorskip("agent_runtime.onnx_policy")
    run_dir, _ = pixel_export
    backend = onnx_policy.OnnxPolicy(run_dir / "policy.onnx")
    assert backend.spec.observation_names == ("pixels", "proprio")
    action = backend.infer({"pixels": np.zeros((2, 84, 84, 9), np.uint8), "proprio": np.zeros((2, 2), np.float32)})
    assert action.shape == (2, 1)


def test_a_teacher_trained_without_proprio_keeps_the_input_the_spec_names(pixel_run_without_proprio, tmp_path):
    out = tmp_path / "no-proprio.onnx"
    summary = run_export(
        ExportConfig(run_dir=pixel_run_without_proprio, out=out, collect_with="random", latency_calls=5)
    )
    assert summary["inputs"]["proprio"] == ["float32", ["batch", 2]]  # the contract holds; the graph ignores it
    assert summary["parity"]["max_abs_diff"] <= PARITY_ATOL
    session = cpu_session(out, threads=1)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 84, 84, 9), dtype=np.uint8)
    actions = [session.run(None, {"pixels": pixels, "proprio": np.full((2, 2), v, np.float32)})[0] for v in (0, 9)]
    np.testing.assert_array_equal(*actions)


def test_a_teacher_with_a_fine_tuned_stage_exports_with_parity(finetuned_run, tmp_path):
    out = tmp_path / "finetuned.onnx"
    summary = run_export(ExportConfig(run_dir=finetuned_run, out=out, collect_with="random", latency_calls=5))
    assert summary["parity"]["max_abs_diff"] <= PARITY_ATOL
    assert set(summary["inputs"]) == {"pixels", "proprio"}


def test_state_teacher_export_with_its_own_actions(state_run, tmp_path):
    out = tmp_path / "state.onnx"
    summary = run_export(ExportConfig(run_dir=state_run, out=out, latency_calls=50))
    assert out.is_file() and summary["parity"]["collected_with"] == "policy"
    assert summary["parity"]["max_abs_diff"] <= PARITY_ATOL
    assert summary["inputs"] == {"state": ["float32", ["batch", 4]]}
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_export_subcommand_prints_the_summary(state_run, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--run-dir", str(state_run), "--out", str(out), "--latency-calls", "0"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert out.is_file()
    assert printed[0].startswith(f"exported sac-state on inverted_pendulum to {out} (")
    assert printed[1] == "inputs: state float32 ('batch', 4); output: action float32 (batch, 1)"
    assert printed[2].startswith("parity: onnxruntime matches torch within ")
    assert printed[3].startswith("weights sha256: ") and len(printed) == 4  # no latency line: --latency-calls 0


def test_weights_hash_follows_its_definition():
    weight = onnx.numpy_helper.from_array(np.array([[1.0, 2.0]], dtype=np.float32), name="w")
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [], initializer=[weight]))
    # name, element type (FLOAT = 1), dims (1, 2) as int64, values as float32, each length-prefixed.
    fields = [b"w", b"1", struct.pack("<2q", 1, 2), struct.pack("<2f", 1.0, 2.0)]
    expected = hashlib.sha256(b"".join(len(f).to_bytes(8, "little") + f for f in fields)).hexdigest()
    assert weights_sha256(model) == expected


def test_weights_hash_is_reproducible_and_follows_the_weights(state_run, state_observations, tmp_path):
    policy, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    first = export_policy(policy, spec, tmp_path / "a.onnx", state_observations)
    again = export_policy(policy, spec, tmp_path / "b.onnx", state_observations)
    assert first.spec.provenance.model_sha256 == again.spec.provenance.model_sha256
    assert len(first.spec.provenance.model_sha256 or "") == 64
    with torch.no_grad():
        next(policy.actor.parameters())[0, 0] += 1e-3  # the first layer's weight
    changed = export_policy(policy, spec, tmp_path / "c.onnx", state_observations)
    assert changed.spec.provenance.model_sha256 != first.spec.provenance.model_sha256
    # Metadata is not part of the hash: the file's hash recomputes to the one it carries.
    assert weights_sha256(onnx.load(str(tmp_path / "a.onnx"))) == first.spec.provenance.model_sha256


def test_exporting_over_an_existing_file_replaces_it(state_run, state_observations, tmp_path):
    policy, spec, _ = policy_from_checkpoint(state_run / CHECKPOINT_NAME)
    out = tmp_path / "policy.onnx"
    out.write_bytes(b"an old export")
    export_policy(policy, spec, out, state_observations)
    onnx.checker.check_model(onnx.load(str(out)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx"]


def test_config_is_validated_and_parsed_from_flags():
    import tyro

    with pytest.raises(ValueError, match="parity_observations is 255; it must be at least 256"):
        ExportConfig(parity_observations=255)
    with pytest.raises(ValueError, match="latency_calls is -1"):
        ExportConfig(latency_calls=-1)
    cfg = tyro.cli(
        ExportConfig, args=["--run-dir", "runs/x", "--collect-with", "random", "--parity-observations", "300"]
    )
    assert cfg == dataclasses.replace(
        ExportConfig(), run_dir=cfg.run_dir, collect_with="random", parity_observations=300
    )
    assert str(cfg.output_path) == "runs/x/policy.onnx"


def test_the_config_imports_no_training_stack():
    import json
    import subprocess
    import sys

    code = "import json, sys, distill.export_config; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert not {"torch", "onnx", "gymnasium", "mujoco"} & set(json.loads(out.stdout))
