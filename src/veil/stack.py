"""`Stack`: a stack's config, state and secrets provider, opened and saved as one.

A stack has one data key. The state document (in the backend) and the config file (in
the project folder) each hold a copy wrapped by the stack's secrets provider, so either
opens on its own; opening a stack unwraps the key once.

    with veil.Stack.open("dev") as stack:
        password = stack.config.require_secret("db:password")
        stack.export("url", veil.Output.format("postgres://app:{}@db", password))
        stack.save()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ._secret import Secret
from .config import StackConfig, config_path
from .crypto import ValueCipher
from .errors import (
    ConfigError,
    ProviderConfigError,
    StackExistsError,
    StackNotFoundError,
    StateError,
    StateFormatError,
)
from .output import Output
from .providers import SecretsProvider, provider_from_description, provider_from_url
from .state.document import (
    Document,
    dump_document,
    dump_document_async,
    load_document,
    load_with_stored_providers,
    provider_entries_from_json,
    unwrap_data_key,
)
from .state.store import DEFAULT_STATE_URL, StackLock, StateStore, store_from_url

__all__ = ["DEFAULT_SECRETS_PROVIDER", "Stack"]

DEFAULT_SECRETS_PROVIDER = "passphrase://"


def _store(backend: str | StateStore | None) -> StateStore:
    if isinstance(backend, StateStore):
        return backend
    return store_from_url(backend or os.environ.get("VEIL_BACKEND_URL") or DEFAULT_STATE_URL)


def _provider(spec: str | SecretsProvider) -> SecretsProvider:
    if isinstance(spec, SecretsProvider):
        return spec
    if isinstance(spec, str):
        return provider_from_url(spec)
    raise ProviderConfigError(
        f"a secrets provider is a URL such as 'passphrase://' or a SecretsProvider, "
        f"not {type(spec).__name__}"
    )


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _keyring(document: Document) -> dict[str, Any]:
    # Descriptions in sorted key order, as the state document stores them: a freshly
    # created stack and a reopened one then write the same config bytes (no churn).
    return {
        "key_id": document.key_id,
        "providers": [
            {**e.to_json(), "description": _sorted(e.description)} for e in document.providers
        ],
    }


class Stack:
    """One stack: :attr:`config`, exported outputs, and the state they are saved in.

    Use :meth:`create` or :meth:`open`, then :meth:`close` (or a ``with`` block). While
    open for writing, the stack's lock is held: a second writer gets
    :class:`veil.StateLockedError`.
    """

    def __init__(
        self,
        *,
        name: str,
        store: StateStore,
        provider: SecretsProvider,
        document: Document,
        config: StackConfig,
        lock: StackLock | None,
    ) -> None:
        self._name = name
        self._store = store
        self._provider = provider
        self._document = document
        self._config = config
        self._lock = lock
        tree = document.tree
        outputs = tree.get("outputs", {}) if isinstance(tree, dict) else {}
        self._exports: dict[str, Any] = dict(outputs) if isinstance(outputs, dict) else {}
        self._extra_providers: tuple[SecretsProvider, ...] = ()
        self._rotate = False

    # --- opening --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        backend: str | StateStore | None = None,
        secrets_provider: str | SecretsProvider = DEFAULT_SECRETS_PROVIDER,
        project_dir: str | Path = ".",
        lock: bool = True,
    ) -> Stack:
        """Create stack ``name``: a new data key, an empty state, a config file.

        ``backend`` is a store URL (default ``VEIL_BACKEND_URL`` or ``file://./.veil``)
        or a :class:`~veil.state.StateStore`; ``secrets_provider`` a provider URL or
        instance. :class:`veil.StackExistsError` if the stack or its config file exists.
        """
        store = _store(backend)
        path = config_path(project_dir, name)
        if not path.parent.is_dir():
            # Checked first: the state must not be written for a config that cannot be.
            raise ConfigError(
                f"the project folder {path.parent} does not exist; create it or pass "
                "another project_dir"
            )
        if store.exists(name):
            raise StackExistsError(f"stack {name!r} already exists in {store.url}; open it instead")
        if path.exists():
            raise StackExistsError(
                f"a config file for stack {name!r} already exists at {path}; open the stack, "
                "or move the file away to start afresh"
            )
        provider = _provider(secrets_provider)
        held = store.lock(name) if lock else None
        try:
            data, document = dump_document({"outputs": {}}, provider=provider, stack=name)
            store.write(name, data)
            config = StackConfig(
                stack=name, path=path, cipher=document.cipher, keyring=_keyring(document)
            )
            config.save()
        except BaseException:
            if held is not None:
                held.release()
            raise
        return cls(
            name=name, store=store, provider=provider, document=document, config=config, lock=held
        )

    @classmethod
    def open(
        cls,
        name: str,
        *,
        backend: str | StateStore | None = None,
        provider: SecretsProvider | str | None = None,
        project_dir: str | Path = ".",
        lock: bool = True,
    ) -> Stack:
        """Open stack ``name``.

        Without ``provider`` it is rebuilt from the description stored in the state,
        with credentials from the environment (``VEIL_PASSPHRASE``, ...). With one (for
        example ``PassphraseProvider(passphrase=...)``) the instance supplies the
        credentials and the stored description the rest (salt, KDF parameters, key ids).
        With ``lock=False`` the stack is opened read-only: :meth:`save` refuses.
        """
        store = _store(backend)
        if not store.exists(name):
            raise StackNotFoundError(
                f"no stack {name!r} in {store.url}; create it with 'veil stack init {name}' "
                "or Stack.create()"
            )
        held = store.lock(name) if lock else None
        try:
            data = store.read(name)
            if provider is None:
                chosen, document = load_with_stored_providers(
                    data, lambda e: provider_from_description(e.scheme, dict(e.description))
                )
            else:
                chosen = _provider(provider)
                document = load_document(data, provider=chosen)
            if document.stack != name:
                raise StateFormatError(
                    f"the state stored for stack {name!r} belongs to stack {document.stack!r}"
                )
            config = cls._open_config(name, project_dir, chosen, document)
        except BaseException:
            if held is not None:
                held.release()
            raise
        return cls(
            name=name, store=store, provider=chosen, document=document, config=config, lock=held
        )

    @staticmethod
    def _open_config(
        name: str, project_dir: str | Path, provider: SecretsProvider, document: Document
    ) -> StackConfig:
        path = config_path(project_dir, name)
        if not path.exists():
            # A checkout without the config file: start an empty one under the stack's key.
            return StackConfig(
                stack=name, path=path, cipher=document.cipher, keyring=_keyring(document)
            )
        raw = StackConfig.read_file(path)
        if raw["stack"] != name:
            raise ConfigError(f"{path} is the config of stack {raw['stack']!r}, not {name!r}")
        keyring = raw["keyring"]
        if keyring.get("key_id") == document.key_id:
            cipher = document.cipher
        else:
            # Sealed under another data key (for example before a rotation elsewhere).
            try:
                entries = provider_entries_from_json(keyring.get("providers"))
                key = unwrap_data_key(
                    provider, entries, stack=name, key_id=str(keyring.get("key_id"))
                )
            except (StateFormatError, KeyError, TypeError, AttributeError):
                raise ConfigError(f"config file {path} has a malformed 'keyring'") from None
            cipher = ValueCipher(key)
        return StackConfig(
            stack=name, path=path, cipher=cipher, keyring=keyring, values=raw.get("config", {})
        )

    # --- the program's view -----------------------------------------------------------

    @property
    def name(self) -> str:
        """The stack's name."""
        return self._name

    @property
    def backend(self) -> StateStore:
        """The store that keeps the stack's state."""
        return self._store

    @property
    def provider(self) -> SecretsProvider:
        """The secrets provider that opened (and will save) the stack."""
        return self._provider

    @property
    def config(self) -> StackConfig:
        """The stack's configuration (secure values sealed under the stack's key)."""
        return self._config

    @property
    def serial(self) -> int:
        """The serial of the state last loaded or saved; grows by one on every save."""
        return self._document.serial

    def export(self, name: str, value: Any) -> None:
        """Export a stack output (a plain value, a :class:`veil.Secret` or an Output).

        Secret values are sealed when the stack is saved."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"an output name is a non-empty string, not {name!r}")
        self._exports[name] = value

    @property
    def outputs(self) -> dict[str, Any]:
        """The exported outputs, resolved: secret leaves as :class:`veil.Secret`.

        A pending Output raises :class:`veil.PendingOutputError` (save with
        :meth:`save_async`, or await it first)."""
        return {k: _resolved(v) for k, v in self._exports.items()}

    # --- saving ---------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._lock is None:
            raise StateError(
                f"stack {self._name!r} was opened read-only (lock=False); open it with "
                "lock=True to save"
            )
        if not self._lock.held:
            raise StateError(f"stack {self._name!r} is closed; open it again to save")

    def _options(self) -> dict[str, Any]:
        return {
            "provider": self._provider,
            "stack": self._name,
            "previous": self._document,
            "additional_providers": self._extra_providers,
            "rotate_key": self._rotate,
        }

    def _after_save(self, data: bytes, document: Document) -> None:
        rotated = document.key_id != self._document.key_id
        # Reseal before writing the state: a secure value that does not open fails the
        # save with nothing written, rather than after the state moved to a new key.
        resealed = self._config._resealed(document.cipher) if rotated else {}
        self._store.write(self._name, data)
        # The config file is written only when its keyring or secure values changed.
        self._config._adopt(document.cipher, _keyring(document), resealed)
        self._config.save()
        self._document = document
        self._rotate = False

    def save(self) -> None:
        """Write state and config: every secret sealed, atomically, serial + 1.

        Pending Outputs raise :class:`veil.PendingOutputError` (use
        :meth:`save_async`); unknown ones :class:`veil.UnknownValueError`."""
        self._check_writable()
        data, document = dump_document({"outputs": self._exports}, **self._options())
        self._after_save(data, document)

    async def save_async(self) -> None:
        """:meth:`save`, first awaiting every pending Output."""
        self._check_writable()
        data, document = await dump_document_async({"outputs": self._exports}, **self._options())
        self._after_save(data, document)

    def change_secrets_provider(
        self, provider: str | SecretsProvider, *, keep: bool = False, rotate_key: bool = False
    ) -> None:
        """Protect the stack with another provider from the next :meth:`save` on.

        The data key is wrapped for the new provider (the values are not re-encrypted
        unless ``rotate_key``). With ``keep`` the current provider can still open it.
        """
        new = _provider(provider)
        self._extra_providers = (self._provider,) if keep else ()
        self._provider = new
        if rotate_key:
            self._rotate = True

    def rotate_key(self) -> None:
        """Use a new data key from the next :meth:`save` on: every secret in state and
        config is sealed afresh, and the old key no longer opens anything new."""
        self._rotate = True

    # --- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Release the stack's lock. Unsaved changes are dropped."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Stack {self._name!r} serial={self._document.serial} backend={self._store.url!r}>"


def _resolved(value: Any) -> Any:
    """A value as it will be saved: Outputs resolved, secret leaves as Secret."""
    if isinstance(value, Output):
        inner = _resolved(value._veil_reveal_())  # pending/unknown raise here
        if value._veil_is_secret_() and not isinstance(inner, Secret):
            return Secret(_revealed(inner))
        return inner
    if isinstance(value, Mapping):
        return {k: _resolved(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolved(v) for v in value]
    return value


def _revealed(value: Any) -> Any:
    """``value`` with nested Secrets opened (it is about to be sealed as one)."""
    if isinstance(value, Secret):
        return _revealed(value.reveal())
    if isinstance(value, Mapping):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revealed(v) for v in value]
    return value
