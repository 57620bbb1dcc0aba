"""Which stack, which project folder, which backend: what a command works on.

The stack is ``--stack``, else ``VEIL_STACK``, else the one ``veil stack select`` chose
for the project folder. The project folder is the nearest folder, from the current one
(or ``-C``) upwards, that holds ``veil.<stack>.json``, as Pulumi finds ``Pulumi.yaml``.
The backend is ``--backend``, else ``VEIL_BACKEND_URL``, else ``.veil`` in the project
folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..config import config_path
from ..stack import Stack
from ..state import FileStore, StateStore, store_from_url, validate_stack_name
from ..workspace import Workspace
from ._base import NotFound, UsageError

__all__ = ["Context"]


def _folders(start: Path) -> list[Path]:
    return [start, *start.parents]


class Context:
    """The stack, project folder and backend of one command, resolved on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cwd = getattr(args, "cwd", None)
        start = Path(cwd).expanduser() if cwd else Path.cwd()
        if not start.is_dir():
            raise NotFound(f"the project folder {start} given with -C/--cwd does not exist")
        self.start = start.absolute()
        self._name: str | None = None
        self._project: Path | None = None
        self._store: StateStore | None = None
        self._fixed = False  # the project folder is given, not searched for

    # --- the stack ----------------------------------------------------------------

    def use(self, name: str, project: Path | None) -> None:
        """Work on stack ``name`` (a command's own argument), in ``project`` if given."""
        self._name = validate_stack_name(name)
        self._project = project
        self._fixed = project is not None

    def given_name(self) -> str | None:
        """The stack named by ``--stack`` or ``VEIL_STACK``, if any."""
        name = getattr(self.args, "stack", None) or os.environ.get("VEIL_STACK") or None
        return str(name) if name else None

    @property
    def name(self) -> str:
        """The stack this command works on; a usage error if none is selected."""
        if self._name is None:
            name = self.given_name()
            if name is None:
                for folder in _folders(self.start):
                    selected = Workspace(folder).current_stack
                    if selected is not None:
                        name, self._project = selected, folder
                        break
            if name is None:
                raise UsageError(
                    "no stack selected: pass --stack NAME, set VEIL_STACK, or run "
                    "'veil stack select NAME' in the project folder"
                )
            self._name = validate_stack_name(name)
        return self._name

    # --- the project folder --------------------------------------------------------

    def find_project(self) -> Path | None:
        """The nearest folder from the start upwards holding ``veil.<stack>.json``."""
        name = self.name
        for folder in _folders(self.start):
            if config_path(folder, name).is_file():
                return folder
        return None

    def project(self, *, need_config: bool) -> Path:
        """The project folder of the stack. With ``need_config``, a folder without the
        stack's config file is :class:`NotFound`, saying where it was looked for;
        otherwise the start folder stands in."""
        if self._fixed and self._project is not None:
            return self._project
        if self._project is None or not config_path(self._project, self.name).is_file():
            found = self.find_project()
            if found is None:
                if need_config:
                    raise NotFound(
                        f"no config file veil.{self.name}.json in {self.start} or any folder "
                        "above it; run the command in the project folder (or pass -C FOLDER), "
                        "restore the file from version control, or create the stack with "
                        f"'veil stack init {self.name}'"
                    )
                found = self._project or self.start
            self._project = found
        return self._project

    # --- the backend ----------------------------------------------------------------

    def store(self, *, need_config: bool = False) -> StateStore:
        if self._store is None:
            url = getattr(self.args, "backend", None) or os.environ.get("VEIL_BACKEND_URL")
            if url:
                self._store = store_from_url(url)
            else:
                self._store = FileStore(self.project(need_config=need_config) / ".veil")
        return self._store

    def store_without_stack(self) -> StateStore:
        """The backend for commands that name no stack (``stack ls``): the project
        folder is the nearest holding any ``veil.*.json``, else the start folder."""
        if self._store is None:
            url = getattr(self.args, "backend", None) or os.environ.get("VEIL_BACKEND_URL")
            if url:
                self._store = store_from_url(url)
            else:
                folder = next(
                    (f for f in _folders(self.start) if any(f.glob("veil.*.json"))), self.start
                )
                self._project = folder
                self._store = FileStore(folder / ".veil")
        return self._store

    def folder(self) -> Path:
        """The project folder as resolved so far (the start folder if none was)."""
        return self._project or self.start

    # --- opening ----------------------------------------------------------------------

    def open(self, *, lock: bool) -> Stack:
        """Open the stack: its config file must be found (a stray one is never made)."""
        project = self.project(need_config=True)
        return Stack.open(
            self.name,
            backend=self.store(need_config=True),
            project_dir=project,
            lock=lock,
            allow_rollback=bool(getattr(self.args, "allow_rollback", False)),
            lock_timeout=getattr(self.args, "lock_timeout", None),
        )
