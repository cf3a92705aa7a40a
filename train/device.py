"""Which torch device a stage computes on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

The name is checked twice: its form in the configs' ``__post_init__`` (``train.config``, torch-free,
so the CLI refuses ``--device gpu`` before importing anything heavy), and whether that device exists
on this machine when a stage starts (:func:`resolve_device`).
"""

from __future__ import annotations

import torch

from train.config import check_device_name


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``; ``auto`` is the first GPU when CUDA is available, else the CPU.

    Raises:
        ValueError: ``name`` is malformed, or names a CUDA device this machine does not have.
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        built = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise ValueError(f"--device {name}: {built} on this machine; use --device cpu (or auto)")
    device = torch.device(name if ":" in name else "cuda:0")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device
