"""Keep freed memory in the process, so that an update's large tensors do not fault in fresh pages.

torch's CPU tensors come from the C allocator. glibc serves blocks above its mmap threshold (128 KiB
at first, rising to at most 32 MiB as blocks are freed) with fresh ``mmap`` pages and returns them
on free, so every update's batch and activations (several MiB each) were faulted in page by page
again. Measured on a 2-core CPU: one SAC update of the frozen conv neck at batch 256 took 50-70 ms
that way and 35 ms with the heap kept (``python -m bench.update_precision``; BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks below this come from the heap: glibc's largest accepted value on 64-bit systems. An update's
largest tensors (a batch of float32 maps, 256 x 3 x 40 x 11 x 11) are 15 MiB."""
_TRIM_THRESHOLD_BYTES = 1 << 30
_TOP_PAD_BYTES = 64 << 20

_done = False


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed blocks for reuse; returns whether it took the settings.

    On other C libraries (macOS, musl) this does nothing and returns ``False``. Idempotent. The cost is
    resident memory: the process keeps what it once used (at most its peak) instead of giving it back.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES),
        (_M_TOP_PAD, _TOP_PAD_BYTES),
    )
    _done = all(mallopt(option, value) == 1 for option, value in settings)
    if not _done:
        log.debug("mallopt refused the allocator settings; large tensors keep glibc's defaults")
    return _done
