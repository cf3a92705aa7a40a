"""The aggregated imitation dataset: observations and teacher labels, memory-mapped on disk.

DAgger keeps every labelled observation of every iteration, so the dataset grows with the run.
Camera frames stay uint8 and live in ``.npy`` memory maps (one per observation entry, plus the
labels), so the dataset can outgrow RAM: a minibatch reads only its own rows. A small JSON file
records how many rows are filled; it is replaced atomically after each append, so a killed run
leaves a dataset whose files agree with each other at its last completed append (distillation itself
does not resume: a new run starts a new dataset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap

from agent_runtime.files import write_text_atomically
from agent_runtime.spec import PolicySpec

META_NAME = "dataset.json"
LABELS = "labels"
MASK = "label_mask"
"""Which of a row's chunk labels are real (1) or past its episode's end (0); all ones without a chunk."""


class Dataset:
    """Observations of ``spec`` (entry name -> rows) with a teacher label per row, on disk.

    Args:
        directory: where the memory maps live (created if missing).
        spec: the student's policy spec: one array per observation entry, with its dtype and shape.
        capacity: rows the maps are sized for; appending beyond it is an error.
        reopen: open an existing dataset in ``directory`` (its spec and capacity must match) instead
            of starting an empty one.
    """

    def __init__(self, directory: Path, spec: PolicySpec, capacity: int, reopen: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"capacity is {capacity}; a dataset holds at least one row")
        self.directory, self.spec, self.capacity = directory, spec, capacity
        directory.mkdir(parents=True, exist_ok=True)
        meta = directory / META_NAME
        layout = {o.name: (o.dtype, o.shape) for o in spec.observations}
        layout[LABELS] = ("float32", spec.action_shape)
        layout[MASK] = ("float32", (spec.chunk_horizon,))
        if reopen:
            saved = _read_meta(meta)
            if saved["capacity"] != capacity or saved["interface"] != spec.interface_hash():
                raise ValueError(
                    f"the dataset in {directory} was made for another student or budget "
                    f"(capacity {saved['capacity']} against {capacity}); start a new --run-dir"
                )
            self.size = int(saved["size"])
            mode = "r+"
        else:
            self.size = 0
            mode = "w+"
        self.arrays: dict[str, np.memmap[Any, np.dtype[Any]]] = {
            name: open_memmap(directory / f"{name}.npy", mode=mode, dtype=dtype, shape=(capacity, *shape))
            for name, (dtype, shape) in layout.items()
        }
        if not reopen:
            self._write_meta()

    def __len__(self) -> int:
        """Rows filled so far."""
        return self.size

    def append(
        self, observations: Mapping[str, np.ndarray], labels: np.ndarray, mask: np.ndarray | None = None
    ) -> None:
        """Add rows: ``observations`` entry name -> (n, ...) as the spec says, ``labels`` float (n, A) in [-1, 1].

        A chunked student's labels are (n, H, A), with ``mask`` (n, H) saying which labels are real.
        """
        self.spec.check_observation(observations, batched=True)
        n = len(labels)
        if labels.shape != (n, *self.spec.action_shape):
            raise ValueError(
                f"labels have shape {labels.shape}; expected ({n}, {', '.join(map(str, self.spec.action_shape))})"
            )
        if mask is None:
            mask = np.ones((n, self.spec.chunk_horizon), np.float32)
        if mask.shape != (n, self.spec.chunk_horizon):
            raise ValueError(f"the label mask has shape {mask.shape}; expected ({n}, {self.spec.chunk_horizon})")
        if self.size + n > self.capacity:
            raise ValueError(f"the dataset holds {self.capacity} rows; {self.size} are filled and {n} more do not fit")
        rows = slice(self.size, self.size + n)
        for name in self.spec.observation_names:
            self.arrays[name][rows] = observations[name]
        self.arrays[LABELS][rows] = labels
        self.arrays[MASK][rows] = mask
        for array in self.arrays.values():
            array.flush()
        self.size += n
        self._write_meta()

    def batch(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Rows ``indices`` (sorted, so the memory maps read forward): observations and labels."""
        observations, labels, _ = self.masked_batch(indices)
        return observations, labels

    def masked_batch(self, indices: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Rows ``indices`` (sorted): observations, labels, and the labels' mask (n, H)."""
        if len(indices) and (indices.min() < 0 or indices.max() >= self.size):
            raise IndexError(f"row indices must be in [0, {self.size}); got {indices.min()}..{indices.max()}")
        rows = np.sort(indices)
        observations = {name: np.asarray(self.arrays[name][rows]) for name in self.spec.observation_names}
        return observations, np.asarray(self.arrays[LABELS][rows]), np.asarray(self.arrays[MASK][rows])

    def _write_meta(self) -> None:
        meta = {"size": self.size, "capacity": self.capacity, "interface": self.spec.interface_hash()}
        write_text_atomically(self.directory / META_NAME, json.dumps(meta))


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.parent} holds no readable dataset ({exc}); start a new --run-dir") from exc
    if not isinstance(meta, dict) or not {"size", "capacity", "interface"} <= set(meta):
        raise ValueError(f"{path} is not a dataset description; start a new --run-dir")
    return meta
