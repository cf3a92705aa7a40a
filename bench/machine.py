"""One line describing the machine a benchmark ran on: CPU model, cores, and the GPU if torch sees one."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """E.g. ``Intel(R) Xeon(R) Processor, 2 cores, AMX; no GPU``."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    info = Path("/proc/cpuinfo")
    if info.exists():
        text = info.read_text()
        names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = ", AMX" if " amx_bf16" in text else ""
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{flags}; {gpu}"
