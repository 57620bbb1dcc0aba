"""``veil stack init NAME --from-pulumi Pulumi.NAME.yaml``: a Pulumi stack's config,
secure values included (nested ones too), moved into a new veil stack.

All or nothing: every value is read and decrypted before the stack is created, and a
failure after that removes the new stack and its config file again.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

from .. import Secret
from ..errors import LeakWarning
from ..interop.pulumi import PulumiStackConfig
from ..stack import Stack, remove_stack
from ..state import StateStore
from ._base import warn

__all__ = ["migrate"]


def _secret_leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[Any, Secret[Any]]]:
    if isinstance(value, Secret):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _secret_leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _secret_leaves(v, (*path, i))]
    return []


def _without_secrets(value: Any) -> Any:
    if isinstance(value, Secret):
        return None
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def _revealed(value: Any) -> Any:
    if isinstance(value, Secret):
        return _revealed(value.reveal())
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revealed(v) for v in value]
    return value


def _copy(stack: Stack, key: str, value: Any) -> None:
    config = stack.config
    if isinstance(value, Secret):
        config.set(key, value.reveal(), secret=True)
        return
    leaves = _secret_leaves(value)
    config.set(key, _without_secrets(value))
    if not leaves:
        return
    if config.is_secret(key):
        # The leak guard sealed the whole value: keep it whole, secrets included.
        config.set(key, _revealed(value), secret=True)
        return
    for path, secret in leaves:
        config.set(key, secret.reveal(), secret=True, path=list(path))


def migrate(
    name: str,
    source: str,
    *,
    store: StateStore,
    project: Path,
    secrets_provider: str,
) -> Stack:
    """Create stack ``name`` holding the config of the Pulumi file ``source``."""
    pulumi = PulumiStackConfig.load(source)
    # Every secure value decrypted first: a wrong passphrase creates nothing.
    values = {key: pulumi.get(key) for key in pulumi}
    stack = Stack.create(
        name, backend=store, secrets_provider=secrets_provider, project_dir=project
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LeakWarning)
            for key, value in values.items():
                _copy(stack, key, value)
        for warning in caught:
            warn(str(warning.message))
        stack.save()
    except BaseException:
        stack.close()
        with contextlib.suppress(Exception):
            remove_stack(name, backend=store, project_dir=project, remove_config=True)
        raise
    return stack
