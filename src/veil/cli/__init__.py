"""The ``veil`` command: stacks, their config and outputs, keys, history and locks.

Secrets print as ``[secret]`` unless ``--show-secrets``. Errors are one line on stderr
(``veil: error: ...``), never a traceback, with an exit code CI can rely on: 0 done,
1 error, 2 usage error, 3 not found, 130 interrupted. A closed pipe is not an error.

One module per idea: ``_project`` (which stack, folder and backend), ``_stacks``
(init, ls, select, rm, output), ``_keys`` (rotate, change-secrets-provider,
recipients), ``_history`` (history, export, import, unlock), ``_config``,
``_pulumi`` (init --from-pulumi), ``_completion``; ``_main`` puts them together.
"""

from __future__ import annotations

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
