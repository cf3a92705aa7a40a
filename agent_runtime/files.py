"""Writing files so that a kill never leaves half of one: the one copy of that plumbing."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends, it is renamed over ``path``.

    The temporary name is ``.NAME.<random>SUFFIX`` in the same directory (a rename within one file
    system; the random part keeps two writers of one file apart). Give ``suffix`` where a writer picks
    its format from the name (``".mp4"``). The file is flushed to disk before the rename. If the block
    raises, or writes nothing, the temporary file is removed and ``path`` is left as it was: a reader,
    or a run killed at any moment, sees the old file or the new one, never a part.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp} for {path}")
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replacing`: the old file or the new one, never a part."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
