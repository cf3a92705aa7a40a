"""Writing files so that a kill never leaves half of one: the one copy of that plumbing."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``: to a temporary name beside it first, then renamed over it.

    A reader, or a run killed at any moment, sees the old file or the new one, never a part. The
    temporary name is ``.NAME.tmp`` in the same directory (a rename within one file system).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
