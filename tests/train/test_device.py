"""--device: names checked before anything heavy runs, a clear error without CUDA, device-neutral checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.cli import main
from train.checkpoint import load_checkpoint, on_cpu, save_checkpoint
from train.config import TrainConfig
from train.device import resolve_device
from train.run_files import CHECKPOINT_NAME
from train.runner import run

NO_CUDA = not torch.cuda.is_available()


def test_device_names_resolve_and_a_bad_name_is_refused_naming_the_field():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "cuda0"):
        with pytest.raises(ValueError, match=rf"device is '{bad}'; use auto"):
            TrainConfig(device=bad)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_cuda_where_there_is_none_is_one_clear_error_line(tmp_path, capsys):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"--device {name}: .* on this machine; use --device cpu"):
            resolve_device(name)
    assert main(["train", "--device", "cuda", "--steps", "10", "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda:") and "Traceback" not in err[0]
    assert not (tmp_path / "r").exists()  # refused before the run directory was made


def test_save_checkpoint_moves_every_tensor_to_the_cpu(tmp_path):
    class Spy(torch.Tensor):
        moved = 0

        def cpu(self, *args, **kwargs):
            Spy.moved += 1
            return torch.Tensor(self)

    payload = {"a": torch.ones(2).as_subclass(Spy), "b": [torch.zeros(1).as_subclass(Spy), {"c": 3}], "d": (1, "x")}
    assert on_cpu(payload)["b"][1] == {"c": 3} and on_cpu(payload)["d"] == (1, "x")
    Spy.moved = 0
    save_checkpoint(tmp_path / "c.pt", payload)
    assert Spy.moved == 2
    loaded = torch.load(tmp_path / "c.pt", map_location="meta", weights_only=True)  # loads onto any device
    assert loaded["a"].device.type == "meta" and loaded["b"][1] == {"c": 3}


def test_a_run_saved_on_another_device_type_resumes_here(tmp_path):
    cfg = TrainConfig(representation="state", steps=120, learning_starts=50, batch_size=8, eval_every=10**6,
                      eval_episodes=1, video=False, device="cpu", run_dir=tmp_path / "r")  # fmt: skip
    run(cfg)
    path = cfg.run_dir / CHECKPOINT_NAME
    payload = load_checkpoint(path)
    assert all(t.device.type == "cpu" for t in payload["head"].values())
    # As a GPU run writes it: the config names cuda, and the learner's generator state is a CUDA one
    # (16 bytes; a CPU generator's is 5,056), which a CPU generator cannot take.
    payload["config"]["device"] = "cuda"
    payload["rng"]["agent"], payload["rng"]["agent_device"] = torch.zeros(16, dtype=torch.uint8), "cuda"
    torch.save(payload, path)
    summary = run(dataclasses.replace(cfg, steps=160, resume=True, device="auto" if NO_CUDA else "cpu"))
    assert summary["steps"] == 160 and summary["device"] == "cpu"
    assert load_checkpoint(path)["config"]["device"] == ("auto" if NO_CUDA else "cpu")  # this machine's choice
