"""The names the design promises are importable from the top-level package."""

from __future__ import annotations

import subprocess
import sys

import veil


def test_every_promised_name_is_exported() -> None:
    promised = {
        "Output", "Secret", "Stack", "secret", "unsecret", "is_secret", "reveal", "UNKNOWN",
        "deferred_output", "contains_unknowns", "LeakWarning", "VeilError", "state",
        "providers",
    }  # fmt: skip
    assert promised <= set(veil.__all__)
    for name in veil.__all__:
        assert hasattr(veil, name), name


def test_state_and_providers_are_reachable_after_import_veil_alone() -> None:
    code = (
        "import veil\n"
        "assert callable(veil.state.dumps) and callable(veil.state.loads)\n"
        "assert callable(veil.providers.provider_from_url)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
