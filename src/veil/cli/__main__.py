"""``python -m veil.cli``: the ``veil`` command."""

from __future__ import annotations

from . import main

raise SystemExit(main())
