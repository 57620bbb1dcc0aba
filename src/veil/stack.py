"""`Stack`: a stack's config, state and secrets provider, opened and saved as one.

A stack has one data key, wrapped in its state document for each recipient (provider)
that can open it. The config file (in the project folder) holds no key: it records,
readably, the data key's id and the recipients, and the state records the same under
its MAC, so each vouches for the other. Opening a stack unwraps the key once.

    with veil.Stack.open("dev") as stack:
        password = stack.config.require_secret("db:password")
        stack.export("url", veil.Output.format("postgres://app:{}@db", password))
        stack.save()

What is checked on open, before any key is used for something new (see
``docs/security.md``):

- the recipients in the state are those the config file records (before any provider
  call, so neither file alone chooses a provider, a key file or a KDF cost);
- the data key (after the MAC is checked) is the one the config records, or one the
  state itself vouches for as the key before an interrupted rotation;
- no secure config value is one the state knows as superseded (an older value copied
  into the file);
- the serial is not older than the newest this project folder has seen (rollback).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, overload

from ._ephemeral import bind_export, ephemeral_refusal
from ._secret import Secret
from ._stack_records import (
    META,
    StackVersion,
    mismatch_error,
    now,
    recipient_url,
    retired_keys,
    stack_history,
    take_lock,
)
from ._stack_records import (
    ledger as state_ledger,
)
from .config import CONFIG_FORMAT, Protection, StackConfig, config_path
from .crypto import ValueCipher, generate_data_key
from .errors import (
    ConfigError,
    ConfigStateMismatchError,
    PendingOutputError,
    ProviderConfigError,
    ProviderError,
    StackExistsError,
    StackNotFoundError,
    StateError,
    StateFormatError,
    StateIntegrityError,
    StateRollbackError,
    VeilError,
)
from .output import Output, one_way
from .providers import SecretsProvider, provider_from_description, provider_from_url
from .state._async import dump_document_async
from .state.document import (
    Document,
    PathLike,
    dump_document,
    format_path,
    load_document,
    load_with_stored_providers,
    read_header,
)
from .state.store import DEFAULT_STATE_URL, StackLock, StateStore, store_from_url
from .workspace import Seen, Workspace

__all__ = [
    "DEFAULT_SECRETS_PROVIDER",
    "Stack",
    "StackVersion",
    "import_state",
    "remove_stack",
    "stack_history",
]

DEFAULT_SECRETS_PROVIDER = "passphrase://"

# The state tree's member for what the stack records about itself: digests of its
# secure config values, and the data key before a rotation whose config write is not
# yet confirmed. Program outputs live under "outputs".
_LEDGER_DEPTH = 16  # superseded values remembered per config key


def _store(backend: str | os.PathLike[str] | StateStore | None) -> StateStore:
    if isinstance(backend, StateStore):
        return backend
    if backend is not None and not isinstance(backend, (str, os.PathLike)):
        raise StateError(
            f"a backend is a store URL such as 'file://./.veil', a path or a StateStore, "
            f"not {type(backend).__name__}"
        )
    if isinstance(backend, os.PathLike):
        backend = os.fspath(backend)
    return store_from_url(backend or os.environ.get("VEIL_BACKEND_URL") or DEFAULT_STATE_URL)


def _provider(spec: str | SecretsProvider, project: Path | None = None) -> SecretsProvider:
    if isinstance(spec, SecretsProvider):
        return spec
    if isinstance(spec, str):
        # A relative key file path in the URL is relative to the project folder.
        return provider_from_url(spec, base_dir=project)
    raise ProviderConfigError(
        f"a secrets provider is a URL such as 'passphrase://' or a SecretsProvider, "
        f"not {type(spec).__name__}"
    )


def _project(project_dir: object) -> Path:
    if not isinstance(project_dir, (str, os.PathLike)):
        raise ConfigError(
            f"project_dir is a folder path (str or os.PathLike), not {type(project_dir).__name__}"
        )
    return Path(project_dir)


def _protection(key_id: str, entries: Any) -> Protection:
    return Protection(key_id, [(e.scheme, e.description) for e in entries])


def _seal_member(container: Any, key: str | int) -> None:
    """``container[key]`` becomes a Secret, if the container holds that member."""
    if isinstance(container, dict) and key in container:
        container[key] = _as_secret(container[key])
    if (
        isinstance(container, list)
        and isinstance(key, int)
        and -len(container) <= key < len(container)
    ):
        container[key] = _as_secret(container[key])


def _as_secret(value: Any) -> Any:
    """A Secret of ``value``; a secret Output of an Output (a Secret cannot hold one)."""
    return Output.secret(value) if isinstance(value, Output) else Secret(value)


def remove_stack(
    name: str,
    *,
    backend: str | os.PathLike[str] | StateStore | None = None,
    project_dir: str | os.PathLike[str] = ".",
    remove_config: bool = False,
) -> None:
    """Remove stack ``name``: its state, history and lock; its config file too with
    ``remove_config``. :class:`veil.StackNotFoundError` if there is no such stack."""
    store = _store(backend)
    project = _project(project_dir)
    if not store.exists(name):
        raise StackNotFoundError(f"no stack {name!r} in {store.url}")
    store.break_lock(name)
    store.delete(name)
    store.break_lock(name)
    workspace = Workspace(project)
    workspace.forget(store.url, name)
    if workspace.current_stack == name:
        workspace.select(None)
    if remove_config:
        with contextlib.suppress(FileNotFoundError):
            config_path(project, name).unlink()


def import_state(
    name: str,
    data: bytes,
    *,
    backend: str | os.PathLike[str] | StateStore | None = None,
    project_dir: str | os.PathLike[str] = ".",
    secrets_provider: SecretsProvider | str | None = None,
) -> int:
    """Replace the state of stack ``name`` with ``data``, an encrypted state document
    of the same stack (``veil stack export``, a history version), as a new serial;
    return that serial. The recovery path: it works when the live state is damaged
    or missing.

    When the live state opens, the imported values are sealed under its key and
    recipients (restoring an old version never undoes a rotation). When it does not,
    the import keeps its own key and recipients, and the config file must record that
    key (or hold no secure value). The import is the operator's explicit choice, so
    this folder's rollback record is reset to the new serial.
    """
    store = _store(backend)
    project = _project(project_dir)
    header = read_header(data)
    if header.stack != name:
        raise StateFormatError(f"the import is a state of stack {header.stack!r}, not {name!r}")
    project_base = project

    def build(entry: Any) -> SecretsProvider:
        return provider_from_description(
            entry.scheme, dict(entry.description), base_dir=project_base
        )

    if secrets_provider is None:
        opener, imported = load_with_stored_providers(data, build)
    else:
        opener = _provider(secrets_provider, project)
        imported = load_document(data, provider=opener)
    tree = imported.tree
    outputs = tree.get("outputs") if isinstance(tree, dict) else None
    if not isinstance(outputs, dict):
        raise StateFormatError("the import holds no 'outputs' object")
    live: Stack | None = None
    if store.exists(name):
        try:
            live = Stack.open(
                name,
                backend=store,
                project_dir=project,
                secrets_provider=secrets_provider,
                allow_rollback=True,
            )
        except (StateFormatError, StateIntegrityError):
            live = None  # damaged: recovered from the import below
    if live is not None:
        with live:
            live.replace_outputs(outputs)
            live.save()
            return live.serial

    workspace = Workspace(project)
    with store.lock(name):
        serials = [imported.serial]
        for entry in store.history(name):
            try:
                serials.append(read_header(store.read_version(name, entry.version)).serial)
            except VeilError:
                continue
        path = config_path(project, name)
        file = StackConfig.read_file(path) if path.exists() else None
        protection = _protection(imported.key_id, imported.providers)
        if file is not None and file.protection.key_id != imported.key_id:
            probe = StackConfig(
                stack=name,
                path=path,
                cipher=imported.cipher,
                protection=file.protection,
                values=file.values,
            )
            if probe.secure_keys():
                raise ConfigStateMismatchError(
                    f"the config file {path} records data key {file.protection.key_id}, the "
                    f"import is sealed under {imported.key_id}: import a version written "
                    "under the config's key (see 'veil stack history'), or restore the "
                    "config file that goes with this version"
                )
        new_serial = max(serials) + 1
        document_data, document = dump_document(
            tree, provider=opener, stack=name, previous=imported, serial=new_serial
        )
        store.write(name, document_data)
    workspace.record(store.url, name, Seen(document.serial, document.key_id), force=True)
    config = StackConfig(
        stack=name,
        path=path,
        cipher=document.cipher,
        protection=protection,
        values=file.values if file is not None else None,
        dirty=True,
    )
    config.save()
    return document.serial


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
        workspace: Workspace,
        retired: Mapping[str, bytes] | None = None,
    ) -> None:
        self._name = name
        self._store = store
        self._provider = provider
        self._document = document
        self._config = config
        self._lock = lock
        self._workspace = workspace
        self._project = config.path.parent
        tree = document.tree
        outputs = tree.get("outputs", {}) if isinstance(tree, dict) else {}
        self._exports: dict[str, Any] = dict(outputs) if isinstance(outputs, dict) else {}
        # Recipients change only through change_secrets_provider (None: keep them).
        self._new_recipients: tuple[SecretsProvider, ...] | None = None
        self._added: list[SecretsProvider] = []
        self._dropped: set[str] = set()
        # Schemes removed in this session: never wrapped for again implicitly.
        self._not_recipients: set[str] = set()
        self._allow_plaintext: set[tuple[str | int, ...]] = set()
        self._rotate = False
        # Keys the config may still be sealed under (an interrupted rotation), kept in
        # the state until a config write under the current key is confirmed.
        self._retired: dict[str, bytes] = dict(retired or {})
        self._ledger = state_ledger(document)
        self._written_ledger: dict[str, list[str]] = self._ledger
        self._written_retired = False

    # --- opening --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        backend: str | os.PathLike[str] | StateStore | None = None,
        secrets_provider: str | SecretsProvider = DEFAULT_SECRETS_PROVIDER,
        project_dir: str | os.PathLike[str] = ".",
        lock: bool = True,
        allow_plaintext: Iterable[PathLike] = (),
    ) -> Stack:
        """Create stack ``name``: a new data key, an empty state, a config file.

        ``backend`` is a store URL (default ``VEIL_BACKEND_URL`` or ``file://./.veil``)
        or a :class:`~veil.state.StateStore`; ``secrets_provider`` a provider URL or
        instance. :class:`veil.StackExistsError` if the stack or its config file exists.
        """
        store = _store(backend)
        project = _project(project_dir)
        path = config_path(project, name)
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
        provider = _provider(secrets_provider, project)
        workspace = Workspace(project)
        held = store.lock(name) if lock else None
        try:
            data, document = dump_document({"outputs": {}}, provider=provider, stack=name)
            store.write(name, data)
            config = StackConfig(
                stack=name,
                path=path,
                cipher=document.cipher,
                protection=_protection(document.key_id, document.providers),
                dirty=True,
            )
            config.save()
            workspace.record(store.url, name, Seen(document.serial, document.key_id), force=True)
        except BaseException:
            if held is not None:
                held.release()
            raise
        stack = cls(
            name=name,
            store=store,
            provider=provider,
            document=document,
            config=config,
            lock=held,
            workspace=workspace,
        )
        stack._allow(allow_plaintext)
        return stack

    @classmethod
    def open(
        cls,
        name: str,
        *,
        backend: str | os.PathLike[str] | StateStore | None = None,
        secrets_provider: SecretsProvider | str | None = None,
        project_dir: str | os.PathLike[str] = ".",
        lock: bool = True,
        allow_rollback: bool = False,
        lock_timeout: float | None = None,
        allow_plaintext: Iterable[PathLike] = (),
        provider: SecretsProvider | str | None = None,
    ) -> Stack:
        """Open stack ``name``.

        Without ``secrets_provider`` it is rebuilt from the recipients stored in the
        state (checked against the config file first), with credentials from the
        environment (``VEIL_PASSPHRASE``, ...). With one (for example
        ``PassphraseProvider(passphrase=...)``) the instance supplies the credentials
        and the stored settings the rest (salt, KDF parameters, key ids). With
        ``lock=False`` the stack is opened read-only: :meth:`save` refuses.

        Raises :class:`veil.ConfigStateMismatchError` when the config file and the
        state do not vouch for each other, and :class:`veil.StateRollbackError` when the
        state is older than one this project folder has seen (``allow_rollback=True``
        for a deliberate restore). ``provider=`` is a deprecated alias of
        ``secrets_provider=``.

        While another writer holds the lock, :class:`veil.StateLockedError` at once, or
        after waiting up to ``lock_timeout`` seconds (default ``VEIL_LOCK_TIMEOUT``,
        else 0) for it to be released.
        """
        if provider is not None:
            if secrets_provider is not None:
                raise ProviderConfigError("pass secrets_provider= only (provider= is its old name)")
            warnings.warn(
                "Stack.open(provider=) is deprecated; use secrets_provider=",
                DeprecationWarning,
                stacklevel=2,
            )
            secrets_provider = provider
        store = _store(backend)
        project = _project(project_dir)
        if not store.exists(name):
            raise StackNotFoundError(
                f"no stack {name!r} in {store.url}; create it with 'veil stack init {name}' "
                "or Stack.create()"
            )
        workspace = Workspace(project)
        held = take_lock(store, name, lock_timeout) if lock else None
        try:
            stack = cls._open_locked(
                name, store, project, workspace, secrets_provider, held, allow_rollback
            )
        except BaseException:
            if held is not None:
                held.release()
            raise
        stack._allow(allow_plaintext)
        return stack

    @classmethod
    def _open_locked(
        cls,
        name: str,
        store: StateStore,
        project: Path,
        workspace: Workspace,
        spec: SecretsProvider | str | None,
        held: StackLock | None,
        allow_rollback: bool,
    ) -> Stack:
        data = store.read(name)
        header = read_header(data)  # not yet authenticated: only compared, never used
        if header.stack != name:
            raise StateFormatError(
                f"the state stored for stack {name!r} belongs to stack {header.stack!r}"
            )
        seen = workspace.seen(store.url, name)
        if seen is not None and header.serial < seen.serial and not allow_rollback:
            raise StateRollbackError(
                f"the state of stack {name!r} has serial {header.serial}, older than serial "
                f"{seen.serial} that this project folder has already seen: it was rolled back. "
                "To restore an older version deliberately, use 'veil stack import' or "
                "Stack.open(..., allow_rollback=True)."
            )
        path = config_path(project, name)
        file = StackConfig.read_file(path) if path.exists() else None
        if file is not None and file.stack != name:
            raise ConfigError(f"{path} is the config of stack {file.stack!r}, not {name!r}")
        stored = _protection(header.key_id, header.providers)
        if file is not None and not file.protection.same_recipients(stored):
            # Before any provider is built or called: neither file alone chooses one.
            raise mismatch_error(
                name,
                path,
                f"the config records recipients [{file.protection.describe_recipients()}], "
                f"the state [{stored.describe_recipients()}]",
            )

        if spec is None:
            chosen, document = load_with_stored_providers(
                data,
                lambda e: provider_from_description(
                    e.scheme, dict(e.description), base_dir=project
                ),
            )
        else:
            chosen = _provider(spec, project)
            document = load_document(data, provider=chosen)

        retired = retired_keys(document)
        if file is None:
            # A checkout without the config file: start one that records the state.
            config = StackConfig(
                stack=name,
                path=path,
                cipher=document.cipher,
                protection=_protection(document.key_id, document.providers),
                dirty=True,
            )
        else:
            recorded = file.protection.key_id
            if recorded == document.key_id:
                cipher = document.cipher
            elif recorded in retired:
                # The rotation before this state was interrupted before its config
                # write; the state vouches for the old key. Resealed on the next save.
                cipher = ValueCipher(retired[recorded])
            else:
                raise mismatch_error(
                    name,
                    path,
                    f"the config records data key {recorded}, the state is sealed under "
                    f"{document.key_id}",
                )
            config = StackConfig(
                stack=name,
                path=path,
                cipher=cipher,
                protection=file.protection,
                values=file.values,
                dirty=file.version != CONFIG_FORMAT,  # an older format is rewritten
            )
            if cipher is not document.cipher:
                config.rekey(document.cipher, _protection(document.key_id, document.providers))
        cls._check_ledger(name, path, config, document)
        if held is not None or seen is None or document.serial > seen.serial:
            workspace.record(store.url, name, Seen(document.serial, document.key_id), force=True)
        return cls(
            name=name,
            store=store,
            provider=chosen,
            document=document,
            config=config,
            lock=held,
            workspace=workspace,
            retired=retired if config.dirty else None,
        )

    @staticmethod
    def _check_ledger(name: str, path: Path, config: StackConfig, document: Document) -> None:
        """Refuse a secure config value the state knows as superseded."""
        ledger = state_ledger(document)
        if not ledger:
            return
        # A value that does not open is reported when it is read (and set again).
        digests = config.digests(document.cipher, strict=False)
        for key, digest in digests.items():
            known = ledger.get(key)
            if known and digest != known[0] and digest in known[1:]:
                raise mismatch_error(
                    name,
                    path,
                    f"secure config value {key!r} is an older value than the one last saved "
                    f"(serial {document.serial}); set it again if the older value is wanted",
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

        Secret values are sealed when the stack is saved. A :func:`veil.fingerprint`
        inside ``value`` becomes its token for the path it is exported at. A known
        ephemeral value raises :class:`veil.EphemeralValueError` here (naming its
        paths); one still pending is refused by :meth:`save`."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"an output name is a non-empty string, not {name!r}")
        value, found = bind_export(value, ("outputs", name), self._fingerprint_at)
        if found:
            raise ephemeral_refusal([format_path(p) for p in found], f"output {name!r}")
        self._exports[name] = value

    @overload
    def fingerprint(self, value: Output[Any], path: PathLike) -> Output[str]: ...
    @overload
    def fingerprint(self, value: Any, path: PathLike) -> str: ...

    def fingerprint(self, value: Any, path: PathLike) -> Output[str] | str:
        """The fingerprint of ``value`` at ``path`` below the outputs (``"db.pw_version"``
        or ``("db", "pw_version")``): what :func:`veil.fingerprint` becomes when exported
        there. A plain token, ``fp:v1:<key id>:<32 hex>``; for an Output, an Output of
        it (plain, neither secret nor ephemeral; unknown while the value is).

        Equal for an equal value at the same path of this stack, in any process, as
        long as the data key (of the state as last loaded or saved) is the same; it is
        HMAC-SHA256 under a subkey of the data key, so it shows nothing of the value and
        cannot be checked against guesses without the key. A rotation of the data key
        (:meth:`rotate_key`, once saved) changes every fingerprint and its key id part:
        a stored token whose key id is not :attr:`key_id` was made under an older key
        and cannot tell whether the value changed.
        """
        if isinstance(path, str):
            parts: tuple[str | int, ...] = tuple(path.split("."))
        else:
            parts = tuple(path)
        if not parts:
            raise ConfigError("a fingerprint path names a place below the outputs")
        return self._fingerprint_at(value, ("outputs", *parts))

    def _fingerprint_at(self, value: Any, path: tuple[str | int, ...]) -> Output[str] | str:
        cipher = self._document.cipher
        stack = self._name

        def token(plain: Any) -> str:
            return cipher.fingerprint(stack, path, _revealed(plain))

        if isinstance(value, Output):
            return one_way(value, token)
        return token(value)

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

    def _stored_provider(self) -> SecretsProvider:
        """The provider that opened the stack, with the settings stored for it (salt,
        KDF cost, key path): saving keeps its recipient exactly as it was."""
        for entry in self._document.providers:
            if entry.scheme == self._provider.scheme:
                return self._provider.with_description(entry.description)
        return self._provider

    def _recipient_providers(
        self, skip: set[str] | frozenset[str] = frozenset()
    ) -> tuple[SecretsProvider, ...]:
        """A provider for every recipient the stack was last written for: the one that
        opened it, and the others rebuilt from their stored (authenticated) settings
        with credentials from the environment. Needed to wrap a new data key."""
        providers: list[SecretsProvider] = []
        failures: list[str] = []
        opened_scheme = self._provider.scheme
        for entry in self._document.providers:
            if entry.scheme in skip:
                continue
            if entry.scheme == opened_scheme:
                # The provider that opened the stack, with the stored settings (salt,
                # KDF cost): the recipients stay exactly what they were.
                providers.insert(0, self._stored_provider())
                continue
            try:
                providers.append(
                    provider_from_description(
                        entry.scheme, dict(entry.description), base_dir=self._project
                    )
                )
            except VeilError as exc:
                failures.append(f"{entry.scheme}:// ({exc})")
        if failures:
            raise ProviderError(
                f"rotating the data key of stack {self._name!r} wraps it for every recipient, "
                f"and these cannot be used here: {'; '.join(failures)}. Supply their "
                "credentials, or remove them first (remove_recipient)."
            )
        if not providers:
            raise ProviderConfigError(
                f"stack {self._name!r} would have no recipient left; add one first"
            )
        return tuple(providers)

    def _plan(self) -> tuple[dict[str, Any], bytes | None]:
        """The options of the next document, and its new data key if it gets one."""
        options: dict[str, Any] = {"stack": self._name, "previous": self._document}
        new_key = None
        recipients: tuple[SecretsProvider, ...]
        if self._new_recipients is not None:
            recipients = self._new_recipients
            options["replace_recipients"] = True
        else:
            dropped = self._dropped | self._not_recipients
            if self._rotate:
                recipients = self._recipient_providers(skip=dropped)
            else:
                recipients = (self._stored_provider(),)
                options["drop_recipients"] = tuple(sorted(dropped))
            recipients = (*recipients, *self._added)
        if self._rotate:
            new_key = generate_data_key()
            options["rotate_key"] = True
            options["data_key"] = new_key
        options["provider"] = recipients[0]
        options["additional_providers"] = recipients[1:]
        options["allow_plaintext"] = [("outputs", *p) for p in self._allow_plaintext]
        options["leak_hint"] = "Stack.save(allow_plaintext=[...]) (paths below the outputs)"
        return options, new_key

    def _tree(self, new_key: bytes | None) -> dict[str, Any]:
        """What is saved: the outputs, and what the stack records about itself."""
        cipher = self._document.cipher if new_key is None else ValueCipher(new_key)
        # A rotation reseals every secure value: one that does not open fails it here,
        # before anything is written. A plain save leaves a damaged value as it is.
        digests = self._config.digests(cipher, strict=new_key is not None)
        ledger: dict[str, list[str]] = {}
        for key in self._config.secure_keys():
            if key not in digests:  # does not open: keep what the state knew
                if key in self._ledger:
                    ledger[key] = self._ledger[key]
                continue
            digest = digests[key]
            before = [] if new_key is not None else self._ledger.get(key, [])
            if before and before[0] == digest:
                ledger[key] = before
            else:
                ledger[key] = [digest, *[d for d in before if d and d != digest]][:_LEDGER_DEPTH]
        if new_key is None:
            # Superseded values of keys no longer set stay known (re-adding one is a
            # deliberate set, recorded as current by that save).
            for key, before in self._ledger.items():
                ledger.setdefault(key, ["", *[d for d in before if d]][:_LEDGER_DEPTH])
        self._written_ledger = ledger
        meta: dict[str, Any] = {"config": ledger}
        if self._lock is not None:
            # Who wrote this version, for 'veil stack history' (informational).
            info = self._lock.info
            meta["written_by"] = {"owner": info.owner, "host": info.host, "time": now()}
        retired = dict(self._retired)
        if new_key is not None:
            # Until the config is written under the new key, the state vouches for the
            # old one, so an interrupted rotation never leaves the config unreadable.
            # (With any key the config file on disk may still be sealed under, if an
            # earlier rotation's config write did not happen either.)
            retired[self._document.key_id] = self._document.data_key
        self._written_retired = bool(retired)
        if retired:
            meta["retired_keys"] = {kid: Secret(key.hex()) for kid, key in retired.items()}
        return {"outputs": self._exports, META: meta}

    def _after_save(self, data: bytes, document: Document) -> None:
        protection = _protection(document.key_id, document.providers)
        # Every secure config value opened when _tree() took its digest, before the
        # document was made: one that does not open failed the save with nothing written.
        self._store.write(self._name, data)
        self._workspace.record(
            self._store.url, self._name, Seen(document.serial, document.key_id), force=True
        )
        self._document = document
        self._ledger = self._written_ledger  # not document.tree: building it costs a parse
        self._seal_guarded(document)
        self._rotate = False
        self._new_recipients = None
        self._not_recipients |= self._dropped
        self._not_recipients -= {p.scheme for p in self._added}
        self._dropped = set()
        self._added = []
        # The config file is written only when its protection or values changed.
        self._config.rekey(document.cipher, protection)
        self._config.save()
        if self._written_retired:
            # The config is now under the current key: write the state once more
            # without the old key, so that it no longer vouches for a config file
            # sealed under it (a restored pre-rotation file is then refused).
            self._retired = {}
            options, _ = self._plan()
            data, document = dump_document(self._tree(None), **options)
            self._store.write(self._name, data)
            self._workspace.record(
                self._store.url, self._name, Seen(document.serial, document.key_id), force=True
            )
            self._document = document
            self._ledger = self._written_ledger
        self._retired = {}

    def save(self, *, allow_plaintext: Iterable[PathLike] = ()) -> None:
        """Write state and config: every secret sealed, atomically, serial + 1.

        Pending Outputs raise :class:`veil.PendingOutputError` (use
        :meth:`save_async`); unknown ones :class:`veil.UnknownValueError`. A plain value
        that holds a secret's plaintext or looks like a credential is sealed anyway,
        with a :class:`veil.LeakWarning` naming its path below the outputs, unless that
        path is listed in ``allow_plaintext`` (here, or on :meth:`create`/:meth:`open`:
        ``"db.host"`` or ``("db", "host")``)."""
        self._check_writable()
        self._allow(allow_plaintext)
        options, new_key = self._plan()
        try:
            data, document = dump_document(self._tree(new_key), stacklevel=2, **options)
        except PendingOutputError as exc:
            raise PendingOutputError(f"{exc}; or save with 'await stack.save_async()'") from None
        self._after_save(data, document)

    async def save_async(self, *, allow_plaintext: Iterable[PathLike] = ()) -> None:
        """:meth:`save`, first awaiting every pending Output."""
        self._check_writable()
        self._allow(allow_plaintext)
        options, new_key = self._plan()
        data, document = await dump_document_async(self._tree(new_key), stacklevel=2, **options)
        self._after_save(data, document)

    def _allow(self, paths: Iterable[PathLike]) -> None:
        for path in [paths] if isinstance(paths, str) else paths:
            if isinstance(path, str):
                self._allow_plaintext.add(tuple(path.split(".")))
            else:
                self._allow_plaintext.add(tuple(path))

    def _seal_guarded(self, document: Document) -> None:
        """Plain values the leak guard sealed are secrets in memory too, as written."""
        for path in document.guarded:
            if len(path) < 2 or path[0] != "outputs":
                continue
            container: Any = self._exports
            for step in path[1:-1]:
                try:
                    container = container[step]
                except (KeyError, IndexError, TypeError):
                    container = None
                    break
            _seal_member(container, path[-1])

    # --- recipients -------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The id of the stack's current data key (a non-secret fingerprint)."""
        return self._document.key_id

    @property
    def recipients(self) -> list[str]:
        """The URLs of the providers that can open the stack, as last written."""
        return [recipient_url(e.scheme, e.description) for e in self._document.providers]

    def add_recipient(self, provider: str | SecretsProvider) -> None:
        """Let another provider open the stack from the next :meth:`save` on (the data
        key is wrapped for it too; nothing is re-encrypted). One recipient per scheme:
        :class:`veil.ProviderConfigError` if the stack already has one of its scheme."""
        new = _provider(provider, self._project)
        schemes = {e.scheme for e in self._document.providers} - self._dropped
        schemes |= {p.scheme for p in self._added}
        if new.scheme in schemes:
            raise ProviderConfigError(
                f"stack {self._name!r} already has a {new.scheme}:// recipient; remove it "
                "first (a stack has one recipient per scheme; age takes several recipients "
                "in one URL)"
            )
        self._added.append(new)

    def remove_recipient(self, which: str, *, rotate_key: bool = True) -> str:
        """Stop wrapping the data key for a recipient from the next :meth:`save` on.

        ``which`` is a URL as :attr:`recipients` lists it, or ``scheme://``. By default
        the data key is rotated too, since the removed recipient may have kept it
        (``rotate_key=False`` for the cheap re-wrap). Removing the last recipient is
        refused. Returns the URL of the removed recipient."""
        entries = [e for e in self._document.providers if e.scheme not in self._dropped]
        urls = [recipient_url(e.scheme, e.description) for e in entries]
        match = [e for e, url in zip(entries, urls, strict=True) if url == which]
        if not match and which.endswith("://"):
            match = [e for e in entries if e.scheme == which[:-3].lower()]
        if not match:
            raise ProviderConfigError(
                f"stack {self._name!r} has no recipient {which!r}; its recipients: "
                + ", ".join(urls)
            )
        if len(entries) + len(self._added) <= 1:
            raise ProviderConfigError(
                f"{which} is the last recipient of stack {self._name!r}; add another one "
                "first, or use change_secrets_provider"
            )
        entry = match[0]
        self._dropped.add(entry.scheme)
        if rotate_key:
            self._rotate = True
        return recipient_url(entry.scheme, entry.description)

    def replace_outputs(self, outputs: Mapping[str, Any]) -> None:
        """Replace every exported output (for ``veil stack import``); saved by :meth:`save`."""
        if not isinstance(outputs, Mapping) or not all(isinstance(k, str) for k in outputs):
            raise ConfigError("outputs are a mapping of output names (str) to values")
        self._exports = dict(outputs)

    @property
    def state_tree(self) -> Any:
        """The state as last loaded or saved, secrets as :class:`veil.Secret`."""
        return self._document.tree

    def change_secrets_provider(
        self, provider: str | SecretsProvider, *, keep: bool = False, rotate_key: bool = False
    ) -> None:
        """Protect the stack with another provider from the next :meth:`save` on.

        The data key is wrapped for the new provider alone (with ``keep``, for the
        current provider too) and the other recipients are dropped. The values are not
        re-encrypted unless ``rotate_key``; rotate when whoever held the old provider
        may have kept the data key.
        """
        new = _provider(provider, self._project)
        self._new_recipients = (new, self._provider) if keep else (new,)
        self._provider = new
        if rotate_key:
            self._rotate = True

    def rotate_key(self) -> None:
        """Use a new data key from the next :meth:`save` on: every secret in state and
        config is sealed afresh, and the old key no longer opens anything new. The new
        key is wrapped for every current recipient."""
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
