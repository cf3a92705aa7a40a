"""Checkpoints: plain dicts of tensors and built-in types, written atomically.

A checkpoint loads with ``torch.load(path, weights_only=True)``: no pickled objects, so opening one
cannot run code. It carries its format version, the run's config, and the policy spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agent_runtime.files import replacing

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_KIND = "agent-runtime/teacher"
STUDENT_KIND = "agent-runtime/student"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not one of ours; the message says which."""


def save_checkpoint(path: Path, payload: dict[str, Any], kind: str = CHECKPOINT_KIND) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same directory, then rename.

    Tensors on a GPU are saved as CPU tensors (:func:`on_cpu`).

    A reader (or a crash) never sees a half-written file: ``path`` holds either the old checkpoint
    or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": CHECKPOINT_FORMAT_VERSION, "kind": kind, **on_cpu(payload)}
    with replacing(path) as tmp:
        torch.save(payload, tmp)


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (through dicts, lists and tuples) on the CPU.

    Checkpoints are device-neutral: a run trained on a GPU resumes, distills and exports on a machine
    without one.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(on_cpu(v) for v in value)
    return value


def load_checkpoint(path: Path, kind: str = CHECKPOINT_KIND) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, checking its kind and version."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else None
        what = kind.split("/")[-1]
        raise CheckpointError(
            f"{path} is not an agent-runtime {what} checkpoint" + (f" (it is a {found})" if found else "")
        )
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this agent-runtime reads {CHECKPOINT_FORMAT_VERSION}"
        )
    return payload
