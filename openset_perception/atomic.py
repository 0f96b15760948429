"""Atomic file writes: a crash or a kill never leaves a half-written checkpoint, report or state file.

A write goes to a temporary file beside the destination (``.<name>.<8 random chars>.tmp``), is
flushed to disk with ``fsync``, moved over the destination with one ``os.replace`` and the folder
is fsynced so that the rename itself survives a power cut. A kill between creating the temporary
file and the rename leaves that temporary file behind; ``remove_stale_temp_files`` removes such
leftovers (the training run folder calls it on resume).

The temporary file is created with ``os.open(..., 0o666)``, so the kernel applies the process
umask itself and the result gets the usual permissions for new files; that mode is read back with
``fstat`` and restored after the write, because some writers (safetensors) replace the file with a
private 0600 one. The umask is never read or changed (``os.umask`` sets it to read it, a race with
every other thread creating files).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import string
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

_TEMP_SUFFIX = ".tmp"
_RANDOM_ALPHABET = string.ascii_lowercase + string.digits + "_"
_RANDOM_LENGTH = 8
# The same shape as the names tempfile.mkstemp gave earlier versions, so their leftovers match too.
_TEMP_NAME = re.compile(rf"^\.(?P<target>.+)\.[A-Za-z0-9_]{{{_RANDOM_LENGTH}}}{re.escape(_TEMP_SUFFIX)}$")


def _create_temp_file(folder: Path, target_name: str) -> tuple[Path, int]:
    """A new empty file beside the target, and the permission bits the umask gave it."""
    for _ in range(100):
        random_part = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(_RANDOM_LENGTH))
        candidate = folder / f".{target_name}.{random_part}{_TEMP_SUFFIX}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return candidate, mode
    raise FileExistsError(f"could not create a temporary file for {target_name!r} in {folder}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    # Directories cannot be opened for fsync on Windows; there the rename is all we can do.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as error:
        # Some file systems (e.g. some network mounts) cannot sync a folder; the rename is done.
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it over ``path`` in one step.

    ``write`` must write to the given name (truncating or replacing the file is fine). On any
    exception the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temp_file(path.parent, path.name)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_png(path: str | Path, pixels: np.ndarray) -> None:
    """A PNG of (H, W) grey or (H, W, 3) BGR pixels, uint8 or uint16.

    Encoded in memory first: ``cv2.imwrite`` picks the format from the name, which for the
    temporary file is ``.tmp``.
    """
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"cannot encode {path}: {pixels.dtype} pixels of shape {pixels.shape} as PNG")
    atomic_write_bytes(path, encoded.tobytes())


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` (through a file object: given a name, np.save would append ``.npy``)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as stream:
            np.save(stream, array)

    atomic_write(path, write)


def remove_stale_temp_files(folder: str | Path, target_name: str | None = None) -> list[Path]:
    """Remove the temporary files that killed ``atomic_write`` calls left in ``folder``; return them.

    ``target_name`` limits the clean-up to the leftovers of that one destination file name. Call
    it only on a folder this process owns (a run folder at start), never while another process
    may be writing there: its in-flight temporary file would be removed too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file() or entry.is_symlink():
            continue
        if target_name is not None and match.group("target") != target_name:
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
