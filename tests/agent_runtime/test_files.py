"""Atomic writes: the old file or the new one, never a part, and no temporary file left."""

from __future__ import annotations

import pytest

from agent_runtime.files import replacing, write_text_atomically


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    write_text_atomically(path, "first")
    write_text_atomically(path, "second, longer ünïcode")
    assert path.read_text(encoding="utf-8") == "second, longer ünïcode"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomically(path, "kept")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomically(path, "half \ud800 written")  # a lone surrogate cannot be encoded
    assert path.read_text(encoding="utf-8") == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_replacing_renames_what_the_block_wrote_and_keeps_the_suffix(tmp_path):
    path = tmp_path / "clip.mp4"
    with replacing(path, suffix=".mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".clip.mp4.") and tmp.suffix == ".mp4"
        tmp.write_bytes(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_replacing_leaves_the_old_file_when_the_block_fails_midway(tmp_path):
    path = tmp_path / "latest.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"), replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_replacing_refuses_a_block_that_wrote_nothing(tmp_path):
    path = tmp_path / "policy.onnx"
    path.write_bytes(b"old")
    with pytest.raises(FileNotFoundError, match="nothing was written"), replacing(path):
        pass
    assert path.read_bytes() == b"old"
