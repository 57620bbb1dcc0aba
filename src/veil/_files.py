"""Durable file writes, shared by the state store, config files, key files and the CLI.

Every write veil makes goes through here: a file holds its old bytes or its new ones,
never a mix, even if the process is killed or the power fails half way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["create_new", "fsync_dir", "write_atomic"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def fsync_dir(path: Path) -> None:
    """Sync a folder, so that a rename or link in it survives a power loss (POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _write_temp(folder: Path, name: str, data: bytes, mode: int, exact_mode: bool) -> Path:
    """A new temporary file in ``folder`` holding ``data``, synced."""
    tmp = folder / f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, mode)
    try:
        try:
            if exact_mode:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, exact_mode: bool = False) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds the old or the new bytes.

    A temporary file in the same folder is written and synced, then renamed over
    ``path``, and the folder is synced. ``mode`` is filtered by the umask unless
    ``exact_mode``. Raises ``OSError``; callers turn it into their own error.
    """
    folder = path.parent
    tmp = _write_temp(folder, path.name, data, mode, exact_mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def create_new(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``data``, whole, unless it exists: False if it does.

    The bytes are written and synced under a temporary name and hard-linked into
    place (a link fails if the name exists, like ``O_CREAT|O_EXCL``), so the file is
    never seen partly written. Where hard links are not supported, the file is
    created with ``O_EXCL`` and written in place. Raises ``OSError``.
    """
    # The same temp-file steps as write_atomic, then a link instead of a rename.
    folder = path.parent
    tmp = _write_temp(folder, path.name, data, mode, False)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, mode)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(folder)
    return True
