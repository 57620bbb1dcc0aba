"""What this project folder has seen, kept outside version control.

A small JSON record per project folder, in veil's home (``$VEIL_HOME``, else
``$XDG_STATE_HOME/veil``, else ``~/.local/state/veil``), under
``workspaces/<digest of the folder's absolute path>.json``. Nobody who can write the
repository or the backend can write it, so it is what refuses a rollback: for each
stack (per backend) it keeps the newest serial and data key id this folder has opened
or saved.

It also remembers the folder's current stack (``veil stack select``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._files import write_atomic
from .errors import StateError

__all__ = ["Seen", "Workspace", "veil_home"]

_FORMAT = "veil.workspace/1"
_lock = threading.Lock()


def veil_home() -> Path:
    """veil's per-user folder: ``$VEIL_HOME``, ``$XDG_STATE_HOME/veil`` or
    ``~/.local/state/veil``."""
    explicit = os.environ.get("VEIL_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "veil"
    return Path.home() / ".local" / "state" / "veil"


class Seen(NamedTuple):
    """The newest state of one stack this folder has opened or saved."""

    serial: int
    key_id: str


class Workspace:
    """The record of one project folder. Reads are cheap; writes are atomic."""

    def __init__(self, project_dir: str | os.PathLike[str]) -> None:
        folder = Path(project_dir).expanduser().resolve()
        digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:24]
        self.project_dir = folder
        self.path = veil_home() / "workspaces" / f"{digest}.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {"format": _FORMAT, "project": str(self.project_dir), "stacks": {}}
        except OSError as exc:
            raise StateError(
                f"cannot read veil's record of this project folder ({self.path}): "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            raw = None
        if (
            not isinstance(raw, dict)
            or raw.get("format") != _FORMAT
            or not isinstance(raw.get("stacks"), dict)
        ):
            raise StateError(
                f"veil's record of this project folder ({self.path}) is damaged; delete it "
                "(the next open trusts the state and config as they are now)"
            )
        return raw

    def _write(self, raw: Mapping[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise StateError(
                f"cannot write veil's record of this project folder ({self.path}): "
                f"{exc.strerror or type(exc).__name__}; set VEIL_HOME to a writable folder"
            ) from None

    @staticmethod
    def _key(backend_url: str, stack: str) -> str:
        return f"{backend_url}#{stack}"

    def seen(self, backend_url: str, stack: str) -> Seen | None:
        """The newest state of ``stack`` in ``backend_url`` this folder has seen."""
        entry = self._read()["stacks"].get(self._key(backend_url, stack))
        if not isinstance(entry, dict):
            return None
        serial, key_id = entry.get("serial"), entry.get("key_id")
        if type(serial) is not int or not isinstance(key_id, str):
            return None
        return Seen(serial=serial, key_id=key_id)

    def record(self, backend_url: str, stack: str, seen: Seen, *, force: bool = False) -> None:
        """Remember ``seen`` unless a newer serial is already recorded (or ``force``)."""
        with _lock:
            raw = self._read()
            key = self._key(backend_url, stack)
            entry = raw["stacks"].get(key)
            if (
                not force
                and isinstance(entry, dict)
                and entry.get("serial") == seen.serial
                and entry.get("key_id") == seen.key_id
            ):
                return
            if (
                not force
                and isinstance(entry, dict)
                and type(entry.get("serial")) is int
                and entry["serial"] > seen.serial
            ):
                return
            raw["stacks"][key] = {"serial": seen.serial, "key_id": seen.key_id}
            raw["project"] = str(self.project_dir)
            self._write(raw)

    def forget(self, backend_url: str, stack: str) -> None:
        """Drop the record of ``stack`` (after it was removed)."""
        with _lock:
            raw = self._read()
            if raw["stacks"].pop(self._key(backend_url, stack), None) is not None:
                self._write(raw)

    @property
    def current_stack(self) -> str | None:
        """The stack ``veil stack select`` chose for this folder, if any."""
        value = self._read().get("current")
        return value if isinstance(value, str) else None

    def select(self, stack: str | None) -> None:
        """Make ``stack`` this folder's current stack (None: no current stack)."""
        with _lock:
            raw = self._read()
            if stack is None:
                raw.pop("current", None)
            else:
                raw["current"] = stack
            raw["project"] = str(self.project_dir)
            self._write(raw)
