"""The aggregated imitation dataset: memory-mapped on disk, growing across iterations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent_runtime.spec import ObservationError
from distill.dataset import META_NAME, Dataset
from train.envs import build_spec

SPEC = build_spec("inverted_pendulum", "pixels")


def _rows(n: int, start: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    # Row r carries its number everywhere, so a batch can be checked for rows that belong together.
    r = np.arange(start, start + n)
    pixels = np.broadcast_to((r % 256).astype(np.uint8)[:, None, None, None], (n, 84, 84, 9)).copy()
    proprio = np.stack([r, -r], axis=1).astype(np.float32)
    labels = (r[:, None] / 1000.0).astype(np.float32)
    return {"pixels": pixels, "proprio": proprio}, labels


def test_iterations_aggregate_in_uint8_memory_maps_on_disk(tmp_path):
    data = Dataset(tmp_path / "d", SPEC, capacity=30)
    for start in (0, 10, 20):  # three iterations of 10 observations
        data.append(*_rows(10, start))
    assert len(data) == 30
    assert isinstance(data.arrays["pixels"], np.memmap) and data.arrays["pixels"].dtype == np.uint8
    on_disk = np.load(tmp_path / "d" / "pixels.npy", mmap_mode="r")
    assert on_disk.shape == (30, 84, 84, 9) and on_disk[25, 0, 0, 0] == 25
    observations, labels = data.batch(np.array([27, 3, 14]))
    # Sorted rows, and each row's observation and label still belong together.
    np.testing.assert_array_equal(observations["proprio"][:, 0], [3, 14, 27])
    np.testing.assert_array_equal(observations["pixels"][:, 5, 5, 5], [3, 14, 27])
    np.testing.assert_allclose(labels[:, 0], [0.003, 0.014, 0.027])


def test_a_dataset_reopens_at_its_last_append(tmp_path):
    data = Dataset(tmp_path / "d", SPEC, capacity=20)
    data.append(*_rows(7, 0))
    del data
    again = Dataset(tmp_path / "d", SPEC, capacity=20, reopen=True)
    assert len(again) == 7
    again.append(*_rows(5, 7))
    assert json.loads((tmp_path / "d" / META_NAME).read_text())["size"] == 12
    _, labels = again.batch(np.arange(12))
    np.testing.assert_allclose(labels[:, 0], np.arange(12) / 1000.0)


def test_bad_appends_and_reopens_are_refused_with_the_reason(tmp_path):
    data = Dataset(tmp_path / "d", SPEC, capacity=10)
    with pytest.raises(ValueError, match="holds 10 rows; 0 are filled and 11 more do not fit"):
        data.append(*_rows(11, 0))
    observations, labels = _rows(2, 0)
    with pytest.raises(ObservationError, match="pixels"):
        data.append({"pixels": observations["pixels"][..., :3], "proprio": observations["proprio"]}, labels)
    with pytest.raises(ValueError, match=r"labels have shape \(2, 2\)"):
        data.append(observations, np.zeros((2, 2), np.float32))
    assert len(data) == 0  # nothing half-appended
    with pytest.raises(ValueError, match="another student or budget"):
        Dataset(tmp_path / "d", SPEC, capacity=99, reopen=True)
    with pytest.raises(ValueError, match="no readable dataset"):
        Dataset(tmp_path / "empty", SPEC, capacity=10, reopen=True)
    with pytest.raises(IndexError, match=r"row indices must be in \[0, 0\)"):
        data.batch(np.array([0]))
