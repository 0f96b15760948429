"""atomic.py: fsync of the file and its folder, no umask changes, permissions from the umask, clean-up."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from openset_perception import atomic
from openset_perception.atomic import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temp_files,
)


def test_never_touches_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(_mask: int) -> int:
        raise AssertionError("os.umask was called: it changes the mask for every thread")

    monkeypatch.setattr(os, "umask", forbidden)
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_mode_follows_the_process_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "b.bin", b"\x01\x02")
        reference = tmp_path / "reference"
        reference.write_bytes(b"")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "b.bin").stat().st_mode)
    assert mode == 0o640 == stat.S_IMODE(reference.stat().st_mode)


def test_a_writer_that_recreates_the_file_privately_still_gets_the_usual_mode(tmp_path: Path) -> None:
    """safetensors' save_file replaces the file with a 0600 one; the result must not stay private."""

    def private_writer(tmp: str) -> None:
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"weights")
        os.close(fd)

    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "w.safetensors", private_writer)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644


def test_fsyncs_the_file_and_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_text(tmp_path / "c.txt", "x")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(".c.txt.")
    assert Path(synced[1]) == tmp_path


def test_a_failing_writer_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "d.txt"
    atomic_write_text(target, "old")

    def failing(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["d.txt"]


def test_remove_stale_temp_files(tmp_path: Path) -> None:
    kept = [tmp_path / "state.pt", tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / ".x.short.tmp"]
    stale = [tmp_path / ".state.pt.ab12_xyz.tmp", tmp_path / ".metrics.json.00000000.tmp"]
    for path in kept + stale:
        path.write_bytes(b"")
    # A temporary file name as the writer makes it, left by a write killed before its rename.
    left_by_writer, _ = atomic._create_temp_file(tmp_path, "state.pt")
    assert remove_stale_temp_files(tmp_path, "state.pt") == sorted([stale[0], left_by_writer])
    assert remove_stale_temp_files(tmp_path) == [stale[1]]
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert remove_stale_temp_files(tmp_path / "missing") == []
