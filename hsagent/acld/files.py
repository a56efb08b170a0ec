"""Writing files so that a crash leaves the old content or the new, never a mix."""

from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: bytes, mode: int = 0o644, sync_directory: bool = True) -> None:
    """Temporary file in the same directory, fsync, rename over `path`, fsync the directory
    (skip that last step when the caller renames many files and syncs the directory once)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_directory:
        sync_dir(directory)


def sync_dir(directory: str) -> None:
    """Make renames and unlinks in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
