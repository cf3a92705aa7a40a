"""A preset file through every stage: the run keeps it, distill and export use that copy, and
`evaluate` and `robot` refuse any other task definition."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnxruntime as ort
import pytest

from agent_runtime.onnx_policy import OnnxPolicy
from agent_runtime.spec import spec_from_onnx_metadata
from distill.config import DistillConfig
from distill.run_policy import load_run_policy
from distill.runner import run as distill
from models.config import EncoderConfig
from pipeline.cli import main
from tests.agent_runtime.conftest import build_onnx_policy, running_server
from train.config import SACConfig, TrainConfig
from train.envs import build_spec
from train.presets import get_preset
from train.runner import run as train

# inverted_pendulum written as a file, with a camera of its own: a task no built-in preset is.
TASK = """
name = "my_pendulum"
env_id = "InvertedPendulum-v5"
proprio = ["slider.pos", "slider.vel"]
failure_on_termination = "the pole fell"
[camera]
distance = 2.8
elevation_deg = -5.0
azimuth_deg = 90.0
lookat = [0.0, 0.0, 0.2]
"""


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_pendulum.toml"
    path.write_text(TASK)
    return path


def test_a_run_on_a_preset_file_keeps_it_and_distill_and_export_use_the_copy(task_file, tmp_path):
    teacher_dir = tmp_path / "teacher"
    cfg = TrainConfig(preset=str(task_file), representation="state", steps=10, learning_starts=10**6,
                      eval_every=10**6, eval_episodes=1, final_eval_episodes=1, video=False,
                      sac=SACConfig(hidden=(16, 16)), run_dir=teacher_dir)  # fmt: skip
    train(cfg)
    copy = teacher_dir / "preset.toml"
    sha = get_preset(str(task_file)).sha256
    assert copy.is_file() and get_preset(str(copy)).sha256 == sha
    teacher = load_run_policy(teacher_dir)
    assert teacher.preset == str(copy) and teacher.spec.provenance.task_preset_sha256 == sha

    # The user's file changes after training: the run's copy still defines the task for distill.
    task_file.write_text(TASK.replace("distance = 2.8", "distance = 3.5"))
    student_dir = tmp_path / "student"
    distill(DistillConfig(teacher=teacher_dir, run_dir=student_dir, iterations=1, steps_per_iteration=32,
                          updates_per_iteration=2, batch_size=16, eval_episodes=2, latency_calls=5,
                          hidden=(16, 16), channels=8, video=False, failure_iterations=0,
                          check_episodes=2))  # fmt: skip
    assert get_preset(str(student_dir / "preset.toml")).sha256 == sha
    metadata = ort.InferenceSession(str(student_dir / "policy.onnx")).get_modelmeta().custom_metadata_map
    spec = spec_from_onnx_metadata(metadata)
    assert spec.provenance.task_preset == "my_pendulum" and spec.provenance.task_preset_sha256 == sha
    card = json.loads((student_dir / "report.json").read_text())
    assert card["preset"] == str(copy)  # distill ran in the teacher run's own copy

    # Resuming training goes on in the run's own copy: the task it started on, whatever the file says now.
    resumed = train(dataclasses.replace(cfg, steps=20, resume=True))
    assert resumed["preset"] == str(copy) and get_preset(str(copy)).sha256 == sha
    assert load_run_policy(teacher_dir).spec.provenance.task_preset_sha256 == sha


def test_evaluate_and_robot_run_a_policy_only_in_its_own_task(task_file, tmp_path, capsys):
    preset = get_preset(str(task_file))
    model = build_onnx_policy(build_spec(preset, "state"), tmp_path / "policy.onnx", gain=3.0)

    evaluate = ["evaluate", "--policy", str(model), "--episodes", "2", "--out", str(tmp_path / "eval")]
    assert main(evaluate) == 1
    assert "trained on the preset file 'my_pendulum'; pass it as --preset PATH.toml" in capsys.readouterr().err
    assert main([*evaluate, "--preset", str(task_file)]) == 0
    assert "2 episodes" in capsys.readouterr().out
    assert main([*evaluate, "--preset", "inverted_pendulum"]) == 1
    assert "another task definition" in capsys.readouterr().err

    robot = ["robot", "--mode", "state", "--episodes", "1"]
    with running_server(OnnxPolicy(model)) as server:
        endpoint = ["--connect", str(server.endpoint)]
        assert main([*robot, *endpoint, "--preset", str(task_file)]) == 0
        assert "episode returns: " in capsys.readouterr().out
        assert main([*robot, *endpoint, "--preset", "inverted_pendulum"]) == 1  # the same spec, another task
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "trained on the preset file 'my_pendulum'" in err


def test_a_preset_without_joint_readings_observes_camera_frames_alone_through_every_stage(tmp_path, capsys):
    task = tmp_path / "eyes_only.toml"
    task.write_text(TASK.replace('proprio = ["slider.pos", "slider.vel"]\n', "").replace("my_pendulum", "eyes_only"))
    preset = get_preset(str(task))
    assert preset.proprio == () and build_spec(preset, "pixels").observation_names == ("pixels",)
    teacher_dir = tmp_path / "teacher"
    encoder = EncoderConfig(weights="none", input_size=84, output="spatial", stage=0)
    train(TrainConfig(preset=str(task), encoder=encoder, encoder_runtime="torch", steps=40, learning_starts=20,
                      batch_size=8, eval_every=10**6, eval_episodes=1, final_eval_episodes=1, video=False,
                      sac=SACConfig(hidden=(16, 16), latent_dim=16), run_dir=teacher_dir))  # fmt: skip
    student_dir = tmp_path / "student"
    distill(DistillConfig(teacher=teacher_dir, run_dir=student_dir, iterations=1, steps_per_iteration=32,
                          updates_per_iteration=2, batch_size=8, eval_episodes=1, latency_calls=5,
                          hidden=(16, 16), channels=8, video=False, baseline=False, failure_iterations=0,
                          check_episodes=1))  # fmt: skip
    policy = OnnxPolicy(student_dir / "policy.onnx")
    assert policy.spec.observation_names == ("pixels",)
    assert [i.name for i in ort.InferenceSession(str(student_dir / "policy.onnx")).get_inputs()] == ["pixels"]
    with running_server(policy) as server:
        argv = ["robot", "--preset", str(task), "--connect", str(server.endpoint), "--episodes", "1",
                "--rate-hz", "250", "--seconds", "10"]  # fmt: skip
        assert main(argv) == 0
    assert "episode returns: " in capsys.readouterr().out
