"""``agent-runtime demo``: every stage end to end on tiny budgets, resuming after interruptions."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import distill.runner
import train.runner
from pipeline.cli import main
from pipeline.demo import MARKER, PRESET_HASH_KEY, DemoConfig, stage_status
from pipeline.demo_report import json_ready

EXAMPLE_PRESET = Path(__file__).resolve().parents[2] / "docs" / "presets" / "inverted_double_pendulum.toml"

# Training learns for 60 steps at batch 16; distillation runs two iterations of 64 steps; the robot
# drives one episode (an untrained pendulum falls within a second) or 3 s at the policy's 25 Hz.
TINY = [
    "--train-steps", "120", "--learning-starts", "60", "--batch-size", "16", "--distill-iterations", "2",
    "--distill-steps", "64", "--distill-updates", "5", "--eval-episodes", "1", "--robot-episodes", "1",
    "--robot-seconds", "3",
]  # fmt: skip


def _stage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.demo" and "stage" in r.getMessage()]
    caplog.clear()
    return lines


def test_demo_end_to_end_resumes_from_the_last_finished_stage(tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.demo")
    out = tmp_path / "demo"
    argv = ["demo", *TINY, "--out", str(out)]

    # Interrupted (Ctrl-C) while distilling, after training finished and left a partial student.
    def interrupted(cfg: Any) -> None:
        cfg.run_dir.mkdir(parents=True)
        (cfg.run_dir / "left_by_the_kill").write_text("")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(distill.runner, "run", interrupted)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
    assert exit_info.value.code == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    summary = out / "teacher" / "summary.json"
    trained = summary.stat().st_mtime_ns
    assert any("stage 1/4 train: starting (120 steps (60 random first)" in line for line in _stage_lines(caplog))

    # Started again: training is not repeated; the partial student is deleted and distilled anew.
    assert main(argv) == 0
    printed = capsys.readouterr().out
    lines = _stage_lines(caplog)
    assert any(line.startswith("stage 1/4 train: already done") for line in lines)
    assert any(line.startswith("stage 2/4 distill: starting") for line in lines)
    assert summary.stat().st_mtime_ns == trained
    assert not (out / "student" / "left_by_the_kill").exists()

    report = json.loads((out / "demo_report.json").read_text())
    missing = [a["path"] for a in report["artifacts"].values() if not Path(a["path"]).exists()]
    assert not missing, f"artifacts missing: {missing}"
    for name in ("policy.onnx", "teacher.onnx", "student.mp4", "report.json"):
        assert (out / "student" / name).is_file()
    for name in ("eval.mp4", "checkpoints/latest.pt", "summary.json"):
        assert (out / "teacher" / name).is_file()
    assert list((out / "teacher" / "tb").glob("events.out.tfevents.*"))
    assert set(report["scores"]) == {"random", "teacher", "student_dagger"}
    student = report["scores"]["student_dagger"]["stats"]
    assert student["episodes"] == 1 and student["failure_rate"] is not None
    assert report["failure_criterion"]
    assert len(report["robot"]["episode_seeds"]) == len(report["robot"]["episode_returns"])
    assert report["compression"] > 1 and report["latency_ms"]["student"][0] > 0
    robot = report["robot"]
    assert robot["rate_hz"] == pytest.approx(25.0)  # inverted_pendulum's control period is 0.04 s
    assert robot["loop"]["steps"] >= 1 and robot["loop"]["hits"] >= 1
    assert robot["episode_returns"] or robot["elapsed_s"] >= 3.0
    assert robot["server"]["requests"]["act"] >= robot["loop"]["hits"]
    text = (out / "demo_report.txt").read_text()
    assert printed.strip() == text.strip()
    for row in ("random actions: return", "teacher: return", "student (DAgger): return", "compression",
                "robot loop: achieved rate", "robot loop: deadline misses", "latency, student ONNX",
                "policy.onnx", "eval.mp4", "student.mp4", "tb"):  # fmt: skip
        assert row in text, row

    # The robot result and the report lost (a kill while driving): only the robot stage runs again.
    (out / "robot" / "result.json").unlink()
    (out / "demo_report.json").unlink()

    def must_not_run(_cfg: Any) -> None:
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(train.runner, "run", must_not_run)
    monkeypatch.setattr(distill.runner, "run", must_not_run)
    assert main(argv) == 0
    lines = _stage_lines(caplog)
    assert any(line.startswith("stage 2/4 distill: already done") for line in lines)
    assert any(line.startswith("stage 3/4 serve + robot: starting") for line in lines)
    assert (out / "robot" / "result.json").is_file() and (out / "demo_report.json").is_file()


def test_an_interrupted_training_resumes_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    argv = ["demo", *TINY, "--out", str(out)]
    calls: list[Any] = []

    def killed_after_a_checkpoint(cfg: Any) -> None:
        calls.append(cfg)
        (cfg.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / "checkpoints" / "latest.pt").write_bytes(b"checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(train.runner, "run", killed_after_a_checkpoint)
    for _ in range(2):
        with pytest.raises(SystemExit):
            main(argv)
    assert [cfg.resume for cfg in calls] == [False, True]
    assert calls[1].steps == 120 and calls[1].run_dir == out / "teacher"
    assert stage_status(DemoConfig(out=out)) == {"train": "resume", "distill": "start", "robot": "start"}

    # Killed before its first checkpoint: the unfinished directory is deleted and training starts over.
    (out / "teacher" / "checkpoints" / "latest.pt").unlink()
    (out / "teacher" / "replay").mkdir()
    calls.clear()

    def killed_at_once(cfg: Any) -> None:
        calls.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(train.runner, "run", killed_at_once)
    with pytest.raises(SystemExit):
        main(argv)
    assert [cfg.resume for cfg in calls] == [False] and not (out / "teacher" / "replay").exists()
    capsys.readouterr()


def test_the_demo_keeps_to_its_own_directory(tmp_path, capsys):
    someone_elses = tmp_path / "mine"
    someone_elses.mkdir()
    (someone_elses / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(someone_elses)]) == 1
    assert "holds no demo" in capsys.readouterr().err
    assert (someone_elses / "notes.txt").read_text() == "keep me"

    out = tmp_path / "demo"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({**DemoConfig(out=out).to_dict(), "train_steps": 99}))
    assert main(["demo", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "train_steps=99 (now 8000)" in err and "choose another --out" in err


def test_config_scales_budgets_and_names_bad_values():
    half = DemoConfig(scale=0.5)
    assert half.train_config().steps == 4_000 and half.train_config().learning_starts == 500
    distill = half.distill_config()
    assert (distill.iterations, distill.steps_per_iteration, distill.updates_per_iteration) == (8, 1_000, 500)
    assert distill.teacher == Path("runs/demo/teacher") and distill.run_dir == Path("runs/demo/student")
    assert not distill.baseline
    with pytest.raises(ValueError, match="scale is 0"):
        DemoConfig(scale=0)
    with pytest.raises(ValueError, match="never learn"):
        DemoConfig(train_steps=500)
    with pytest.raises(ValueError, match="robot_episodes is 0"):
        DemoConfig(robot_episodes=0)
    with pytest.raises(ValueError, match="unknown task preset 'cartpole'"):
        DemoConfig(preset="cartpole")


def test_demo_help_lists_the_budget_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--scale", "--train-steps", "--distill-iterations", "--robot-episodes", "--preset", "--out"):
        assert flag in help_text


def test_report_json_has_no_nan():
    assert json_ready({"a": float("nan"), "b": [1.0, float("inf")], "c": (2,)}) == {
        "a": None,
        "b": [1.0, None],
        "c": [2],
    }


def test_a_stage_after_one_that_runs_again_is_not_finished(tmp_path):
    cfg = DemoConfig(out=tmp_path)
    for path in ("student/report.json", "robot/result.json"):
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_text("{}")
    assert stage_status(cfg) == {"train": "start", "distill": "start", "robot": "start"}
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "summary.json").write_text("{}")
    assert stage_status(cfg) == {"train": "done", "distill": "done", "robot": "done"}


def test_a_demo_on_a_preset_file_refuses_the_file_once_its_task_changed(tmp_path, capsys):
    # The marker keeps the file's task hash: an edit since the demo began would otherwise be trained on,
    # distilled from the old teacher, and driven in the new task without a word.
    task = tmp_path / "idp.toml"
    task.write_text(EXAMPLE_PRESET.read_text())
    out = tmp_path / "demo"
    out.mkdir()
    marker = {**DemoConfig(out=out, preset=str(task)).to_dict(), PRESET_HASH_KEY: "0" * 64}
    (out / MARKER).write_text(json.dumps(marker))
    assert main(["demo", "--preset", str(task), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"the preset file {task} is not the task the demo in {out} began on" in err
    assert "hash was 000000000000, now " in err and "restore the file, or choose another --out" in err
