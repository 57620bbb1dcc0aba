"""The state document: a readable JSON file where each secret leaf is sealed on its own.

:func:`dumps` walks a tree of plain values, :class:`~veil.Secret` values and Outputs,
seals every secret leaf with the stack's data key (bound to the stack and the leaf's
path), wraps the data key with each provider, and adds a keyed MAC over the whole
document. :func:`loads` checks, in this order, the JSON, the structure and version,
unwraps the data key (one provider call), verifies the MAC, then opens the values.

:func:`dump_document` and :func:`load_document` return a :class:`Document` that a later
save takes as ``previous``: the data key is reused (no provider call) and every secret
that did not change keeps its ciphertext byte for byte, so diffs show only real changes.

The format is specified in ``docs/format.md`` ("The state document").
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn

from .._ephemeral import ephemeral_refusal
from .._secret import Secret
from ..crypto import DATA_KEY_SIZE, ValueCipher, generate_data_key, key_id
from ..errors import (
    InvalidStackNameError,
    InvalidValueError,
    KeyUnwrapError,
    LeakWarning,
    PlaintextLeakError,
    ProviderConfigError,
    ProviderError,
    SecretPickleError,
    StateFormatError,
    StateIntegrityError,
    UsageError,
    VeilError,
)
from ._canonical import (
    ESCAPE_KEY,
    SECRET_KEY,
    aad_prefix,
    canonical_json,
    canonical_tree,
    format_error,
    format_path,
    mac_input,
    make_canonical_encoder,
    render_tree,
)
from ._sticky import keep_sealed, sticky_message
from ._walk import Opener, Sealer, rebuild
from .leaks import PathLike, find_leaks, leak_message, normalise_allow, strict_from_env
from .store import validate_stack_name

if TYPE_CHECKING:
    from ..providers import SecretsProvider

__all__ = [
    "ESCAPE_KEY",
    "FORMAT_VERSION",
    "SECRET_KEY",
    "Document",
    "DocumentHeader",
    "PathLike",
    "ProviderEntry",
    "dump_document",
    "dumps",
    "format_path",
    "load_document",
    "loads",
    "read_header",
]

FORMAT_VERSION: Final = 1
"""The state document format this version writes and reads."""

_TOP_KEYS: Final = ("veil_state", "stack", "serial", "key_id", "providers", "tree", "mac")
_ENTRY_KEYS: Final = frozenset({"scheme", "description", "wrapped_key"})
_HEX: Final = frozenset("0123456789abcdef")


class ProviderEntry(NamedTuple):
    """One provider's copy of the data key, as stored in a document."""

    scheme: str
    description: Mapping[str, Any]
    wrapped_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "description": dict(self.description),
            "wrapped_key": base64.b64encode(self.wrapped_key).decode("ascii"),
        }

    def __repr__(self) -> str:
        return f"ProviderEntry(scheme={self.scheme!r}, description={self.description!r})"


class DocumentHeader(NamedTuple):
    """The clear fields of a state document, read without any key (:func:`read_header`)."""

    stack: str
    serial: int
    key_id: str
    providers: tuple[ProviderEntry, ...]


class Document:
    """A state document in memory: what :func:`load_document` read or
    :func:`dump_document` wrote.

    - ``tree``: the values, with every sealed leaf as a :class:`~veil.Secret`
      (equal to ``loads`` of the bytes).
    - ``stack``, ``serial``, ``key_id``, ``providers``: the document's clear fields.
    - ``cipher``: the :class:`~veil.crypto.ValueCipher` of the data key.
    - ``guarded``: the paths of plain values sealed anyway in this save: by the leak
      guard, or because the previous document had them sealed.

    Pass it as ``previous`` to the next save of the stack: the data key is reused
    (no provider call) and unchanged secrets keep their ciphertexts. It holds the data
    key and plaintexts in memory; its ``repr`` shows neither, it cannot be pickled, and
    it is immutable.
    """

    __slots__ = (
        "_cipher",
        "_data_key",
        "_opened_by",
        "_sealed",
        "_tree_box",
        "_tree_text",
        "guarded",
        "key_id",
        "providers",
        "serial",
        "stack",
    )

    stack: str
    serial: int
    key_id: str
    providers: tuple[ProviderEntry, ...]
    _data_key: bytes
    _cipher: ValueCipher
    # aad -> (plaintext: the string itself, or the canonical bytes of another value;
    # sealed value): what lets a re-save keep ciphertexts.
    _sealed: Mapping[str, tuple[str | bytes, str]]
    # The canonical text of the stored tree (markers in place of secrets), from which
    # the tree is built on first use; None when the tree is already built.
    _tree_text: str | None
    # Providers this document was opened or written with, and the entry each used.
    _opened_by: tuple[tuple[object, ProviderEntry], ...]
    _tree_box: list[Any]
    guarded: tuple[tuple[str | int, ...], ...]

    def __init__(
        self,
        *,
        stack: str,
        serial: int,
        key_id: str,
        providers: tuple[ProviderEntry, ...],
        data_key: bytes,
        cipher: ValueCipher,
        sealed: Mapping[str, tuple[str | bytes, str]],
        tree_text: str | None,
        opened_by: tuple[tuple[object, ProviderEntry], ...],
        tree_box: list[Any] | None = None,
        guarded: tuple[tuple[str | int, ...], ...] = (),
    ) -> None:
        init = object.__setattr__
        init(self, "stack", stack)
        init(self, "serial", serial)
        init(self, "key_id", key_id)
        init(self, "providers", providers)
        init(self, "_data_key", data_key)
        init(self, "_cipher", cipher)
        init(self, "_sealed", sealed)
        init(self, "_tree_text", tree_text)
        init(self, "_opened_by", opened_by)
        init(self, "_tree_box", [] if tree_box is None else tree_box)
        init(self, "guarded", guarded)

    # Immutable as Secret is: two lines each, the message naming the class.
    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a Document is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("a Document is immutable")

    def __repr__(self) -> str:
        return (
            f"Document(stack={self.stack!r}, serial={self.serial!r}, "
            f"key_id={self.key_id!r}, providers={self.providers!r})"
        )

    @property
    def tree(self) -> Any:
        """The values, sealed leaves as :class:`~veil.Secret` (built once, on first use)."""
        if not self._tree_box:
            assert self._tree_text is not None
            self._tree_box.append(rebuild(self._tree_text, self._sealed, self.stack))
        return self._tree_box[0]

    @property
    def cipher(self) -> ValueCipher:
        """The cipher of the document's data key: key material.

        It opens and seals values of this stack (for example a config file's secure
        values). Its ``repr`` shows only the key id, and it cannot be pickled.
        """
        return self._cipher

    @property
    def data_key(self) -> bytes:
        """The document's data key: key material, for the stack that owns it (to keep
        the previous key while a rotation completes). Never write it anywhere."""
        return self._data_key

    def __reduce_ex__(self, protocol: object) -> Any:
        raise SecretPickleError("a Document holds a data key and plaintexts; it cannot be pickled")


def _same(a: str | bytes, b: str | bytes) -> bool:
    """Whether two plaintext keys are equal, compared in constant time."""
    if type(a) is str:
        if type(b) is not str:
            return False
        return hmac.compare_digest(
            a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
        )
    return isinstance(a, bytes) and isinstance(b, bytes) and hmac.compare_digest(a, b)


def _check_provider(provider: object) -> None:
    from ..providers.base import SecretsProvider  # below state; imported when first used

    if not isinstance(provider, SecretsProvider):
        raise ProviderConfigError(
            f"a provider is a veil.providers.SecretsProvider (for example "
            f"veil.providers.provider_from_url('passphrase://')), not {type(provider).__name__}"
        )


def _wrap(provider: SecretsProvider, data_key: bytes, stack: str) -> ProviderEntry:
    context = {"stack": stack}
    try:
        wrapped = provider.wrap_key(data_key, context)
        description = provider.describe()
    except VeilError:
        raise
    except Exception as exc:  # a user provider's bug: typed, without its message
        raise ProviderError(
            f"the {provider.scheme!r} provider failed to wrap the data key "
            f"({type(exc).__name__}); check its configuration"
        ) from exc
    if not isinstance(wrapped, bytes) or not wrapped:
        raise ProviderError(f"the {provider.scheme!r} provider's wrap_key did not return bytes")
    try:
        json.dumps(description, allow_nan=False)
    except (TypeError, ValueError):
        raise ProviderError(
            f"the {provider.scheme!r} provider's describe() is not JSON data"
        ) from None
    return ProviderEntry(scheme=provider.scheme, description=description, wrapped_key=wrapped)


def _entries_for(
    providers: Sequence[SecretsProvider],
    data_key: bytes,
    stack: str,
    previous: Document | None,
    keep: bool,
    drop: tuple[str, ...] = (),
) -> tuple[tuple[ProviderEntry, ...], tuple[tuple[object, ProviderEntry], ...]]:
    """The provider entries of a new document, and which provider made each.

    With ``keep`` (and a previous document under the same key), every entry of the
    previous document stays: the recipients a stack was last written for change only
    through an explicit operation. A provider given here reuses the entry it opened or
    one whose settings are unchanged, and otherwise replaces the entry of its scheme
    (one entry per scheme) or adds one.
    """
    entries: list[ProviderEntry] = (
        [e for e in previous.providers if e.scheme not in drop] if (keep and previous) else []
    )
    if not entries and not providers:
        raise ProviderConfigError("a stack needs at least one recipient; none would be left")
    opened: list[tuple[object, ProviderEntry]] = []
    for p in providers:
        entry = None
        if previous is not None:
            for obj, e in previous._opened_by:
                if obj is p and e in previous.providers:
                    entry = e
                    break
            if entry is None:
                description = p.describe()
                for e in previous.providers:
                    if e.scheme == p.scheme and e.description == description:
                        entry = e
                        break
        if entry is None:
            entry = _wrap(p, data_key, stack)
        same_scheme = [e for e in entries if e.scheme == entry.scheme and e != entry]
        if any(e.scheme == entry.scheme and e != entry for _p, e in opened):
            raise ProviderConfigError(
                f"two {entry.scheme}:// providers were given; a stack has one recipient per "
                "scheme (age takes several recipients in one URL)"
            )
        entries = [e for e in entries if e not in same_scheme]
        if entry not in entries:
            entries.append(entry)
        opened.append((p, entry))
    return tuple(entries), tuple(opened)


# --- dumping -----------------------------------------------------------------------------------


def dump_document(
    tree: Any,
    *,
    provider: SecretsProvider,
    stack: str,
    previous: Document | bytes | None = None,
    additional_providers: Sequence[SecretsProvider] = (),
    serial: int | None = None,
    rotate_key: bool = False,
    strict: bool | None = None,
    allow_plaintext: Iterable[PathLike] = (),
    replace_recipients: bool = False,
    drop_recipients: Iterable[str] = (),
    data_key: bytes | None = None,
    stacklevel: int = 1,
    leak_hint: str = "allow_plaintext",
) -> tuple[bytes, Document]:
    """Serialise ``tree`` for ``stack``; return the bytes and the new :class:`Document`.

    - Every :class:`~veil.Secret` and every resolved secret Output is sealed as one
      leaf; everything else stays readable. A pending Output raises
      :class:`~veil.PendingOutputError`, an unknown one :class:`~veil.UnknownValueError`,
      a non-JSON value or a non-str key :class:`~veil.InvalidValueError` (each names
      the path). Ephemeral values (``veil.ephemeral``) raise one
      :class:`~veil.EphemeralValueError` naming every path that holds one, before
      anything is sealed.
    - ``previous`` (a Document, or the bytes of one): its data key is reused and each
      secret that did not change keeps its sealed value; the serial grows by one.
      Without it a new data key is made and ``serial`` (default 1) is used.
    - The data key is wrapped for ``provider`` and each of ``additional_providers``
      (any of them can open the document); an entry of ``previous`` is reused for a
      provider it was opened with or whose ``describe()`` is unchanged. Every other
      entry of ``previous`` is kept (the recipients a stack was last written for change
      only explicitly), unless ``replace_recipients``: then exactly the given providers
      can open the new document. ``drop_recipients`` names schemes whose entries are
      left out (and providers of those schemes are ignored). ``previous`` must be a
      document of ``stack`` (:class:`~veil.UsageError` otherwise: another stack's data
      key is never shared).
    - ``rotate_key``: a new data key (``data_key`` if given), every value sealed afresh;
      the providers given must cover every recipient (``replace_recipients`` is implied).
    - The leak guard: a plain string that equals a secret of this document, contains one
      of at least 8 characters, or looks like a well-known credential is sealed anyway
      with a :class:`~veil.LeakWarning` naming its path; with ``strict`` (default: the
      ``VEIL_STRICT`` environment variable) :class:`~veil.PlaintextLeakError` instead.
      Paths in ``allow_plaintext`` stay plain. The warning points at the caller's line
      (``stacklevel`` as for :func:`warnings.warn`; raise it when calling from a
      wrapper) and names ``leak_hint`` as the way to allow a path.
    - A sealed path stays sealed: a plain value at a path where ``previous`` holds a
      sealed value (a type lost a secret field, a refactor dropped ``secret()``) is
      sealed anyway, with a :class:`~veil.LeakWarning` naming the path (strict:
      :class:`~veil.PlaintextLeakError`), unless the path is in ``allow_plaintext``;
      a container there is sealed whole. This holds across rotations too.
    """
    return _dump(
        tree,
        provider=provider,
        stack=stack,
        previous=previous,
        additional_providers=additional_providers,
        serial=serial,
        rotate_key=rotate_key,
        strict=strict,
        allow_plaintext=allow_plaintext,
        replace_recipients=replace_recipients,
        drop_recipients=tuple(drop_recipients),
        data_key=data_key,
        leak_hint=leak_hint,
        stacklevel=2 + stacklevel,
    )


def _dump(
    tree: Any,
    *,
    provider: SecretsProvider,
    stack: str,
    previous: Document | bytes | None = None,
    additional_providers: Sequence[SecretsProvider] = (),
    serial: int | None = None,
    rotate_key: bool = False,
    strict: bool | None = None,
    allow_plaintext: Iterable[PathLike] = (),
    replace_recipients: bool = False,
    drop_recipients: tuple[str, ...] = (),
    data_key: bytes | None = None,
    leak_hint: str = "allow_plaintext",
    stacklevel: int,
) -> tuple[bytes, Document]:
    validate_stack_name(stack)
    for p in (provider, *additional_providers):
        _check_provider(p)
    if isinstance(previous, (bytes, bytearray, memoryview)):
        previous = load_document(bytes(previous), provider=provider)
    if previous is not None and not isinstance(previous, Document):
        raise InvalidValueError(
            f"previous must be a Document or bytes, not {type(previous).__name__}"
        )
    if previous is not None and previous.stack != stack:
        raise UsageError(
            f"previous is a document of stack {previous.stack!r}, not {stack!r}: a stack "
            "never reuses another stack's data key"
        )
    if strict is None:
        strict = strict_from_env()

    if previous is not None and not rotate_key:
        if data_key is not None:
            raise UsageError("data_key is for a new stack or a rotation (rotate_key=True)")
        data_key = previous._data_key
        cipher = previous._cipher
        reuse = previous._sealed
        new_serial = previous.serial + 1 if serial is None else serial
    else:
        data_key = generate_data_key() if data_key is None else data_key
        cipher = ValueCipher(data_key)
        reuse = {}
        new_serial = (
            (previous.serial + 1 if previous is not None else 1) if serial is None else serial
        )
    if isinstance(new_serial, bool) or not isinstance(new_serial, int) or new_serial < 0:
        raise InvalidValueError(f"serial must be an int >= 0, not {new_serial!r}")

    return _dump_checked(
        tree,
        sealer=Sealer(stack),
        provider=provider,
        stack=stack,
        previous=previous,
        additional_providers=additional_providers,
        rotate_key=rotate_key,
        strict=strict,
        allow_plaintext=allow_plaintext,
        keep_recipients=not (replace_recipients or rotate_key),
        drop_recipients=drop_recipients,
        leak_hint=leak_hint,
        stacklevel=stacklevel + 1,
        data_key=data_key,
        cipher=cipher,
        serial=new_serial,
        reuse=reuse,
    )


def _allowed(allow_plaintext: Iterable[PathLike]) -> Callable[[tuple[str | int, ...]], bool]:
    """Whether a path is listed in ``allow_plaintext``."""
    names, paths = normalise_allow(allow_plaintext)

    def allowed(full: tuple[str | int, ...]) -> bool:
        return full in paths or format_path(full) in names or ".".join(map(str, full)) in names

    return allowed


def _dump_checked(
    tree: Any,
    *,
    sealer: Sealer,
    provider: SecretsProvider,
    stack: str,
    previous: Document | None,
    additional_providers: Sequence[SecretsProvider],
    rotate_key: bool,
    strict: bool,
    allow_plaintext: Iterable[PathLike],
    keep_recipients: bool,
    drop_recipients: tuple[str, ...],
    leak_hint: str,
    stacklevel: int,
    data_key: bytes,
    cipher: ValueCipher,
    serial: int,
    reuse: Mapping[str, tuple[str | bytes, str]],
) -> tuple[bytes, Document]:
    try:
        stored = sealer.root(tree)
        leaves = sealer.plaintexts()  # walks the values of secret leaves
    except RecursionError:
        raise InvalidValueError(
            "the tree is nested too deeply or refers to itself; state must be a tree"
        ) from None
    if sealer.ephemeral:  # before anything is sealed or written
        raise ephemeral_refusal([format_path(p) for p in sealer.ephemeral], "state")

    guarded: tuple[tuple[str | int, ...], ...] = ()
    if previous is not None and previous._sealed:
        # A sealed path stays sealed: a plain value where the previous document had a
        # sealed one is sealed again (before the leak guard, which then knows it).
        stored, leaves, kept = keep_sealed(
            stored,
            leaves,
            previous._sealed,
            stack=stack,
            in_place=sealer.markers,
            allowed=_allowed(allow_plaintext),
        )
        if kept and strict:
            raise PlaintextLeakError(sticky_message(kept, strict=True, hint=leak_hint))
        if kept:
            warnings.warn(
                sticky_message(kept, strict=False, hint=leak_hint),
                LeakWarning,
                stacklevel=stacklevel,
            )
            guarded = tuple(kept)

    leaks = find_leaks(
        sealer.strings,
        [p for p, k, _a, _m in leaves if type(p) is str],
        [p for p, k, _a, _m in leaves if type(p) is not str],
    )
    if leaks:
        count = len(sealer.leaves)
        replaced, reported = sealer.replace_leaks(stored, leaks, _allowed(allow_plaintext))
        if reported and strict:
            raise PlaintextLeakError(leak_message(reported, strict=True, hint=leak_hint))
        if reported:
            warnings.warn(
                leak_message(reported, strict=False, hint=leak_hint),
                LeakWarning,
                stacklevel=stacklevel,
            )
            stored = replaced
            leaves.extend((v, v, aad, m) for v, aad, m in sealer.leaves[count:])
            guarded += tuple(p for p, _reason in reported)

    sealed: dict[str, tuple[str | bytes, str]] = {}
    fresh: list[tuple[Any, str | bytes, str, dict[str, str]]] = []
    if reuse:
        for leaf in leaves:
            before = reuse.get(leaf[2])
            if before is not None and _same(before[0], leaf[1]):
                leaf[3][SECRET_KEY] = before[1]
                sealed[leaf[2]] = (leaf[1], before[1])
            else:
                fresh.append(leaf)
    else:
        fresh = leaves
    tokens = cipher.seal_many([f[0] for f in fresh], [f[2].encode("ascii") for f in fresh])
    for (_value, key, aad, marker), token in zip(fresh, tokens, strict=True):
        marker[SECRET_KEY] = token
        sealed[aad] = (key, token)

    providers = (provider, *additional_providers)
    entries, opened = _entries_for(
        [p for p in providers if p.scheme not in drop_recipients],
        data_key,
        stack,
        previous if not rotate_key else None,
        keep_recipients,
        drop_recipients,
    )
    header: dict[str, Any] = {
        "veil_state": FORMAT_VERSION,
        "stack": stack,
        "serial": serial,
        "key_id": cipher.key_id,
        "providers": [e.to_json() for e in entries],
    }
    markers = sealer.markers

    def default(value: object) -> dict[str, str]:
        # Only Secrets the walk left in place reach this.
        marker = markers.get(id(value))
        if marker is None or not isinstance(value, Secret):
            raise InvalidValueError(f"a {type(value).__name__} cannot be written to state")
        return marker

    written, tree_text = render_tree(stored, make_canonical_encoder(default))
    mac = cipher.mac(mac_input(header, tree_text)).hex()
    head = ["{\n"]
    for key in ("veil_state", "stack", "serial", "key_id"):
        head.append(f'  "{key}":{canonical_json(header[key])},\n')
    head.append('  "providers":[\n    ')
    head.append(",\n    ".join(canonical_json(p) for p in header["providers"]))
    head.append('\n  ],\n  "tree":')
    data = "".join([*head, written, f',\n  "mac":"{mac}"\n}}\n']).encode("ascii")
    document = Document(
        stack=stack,
        serial=serial,
        key_id=cipher.key_id,
        providers=entries,
        data_key=data_key,
        cipher=cipher,
        sealed=sealed,
        tree_text=tree_text,
        opened_by=opened,
        guarded=guarded,
    )
    return data, document


# The options of dump_document are written out again in dumps (and in _async's
# dump_document_async and dumps_async), not passed as **options, so that type
# checkers and help() show them (tests/test_public_api.py checks the four agree).
def dumps(
    tree: Any,
    *,
    provider: SecretsProvider,
    stack: str,
    previous: Document | bytes | None = None,
    additional_providers: Sequence[SecretsProvider] = (),
    serial: int | None = None,
    rotate_key: bool = False,
    strict: bool | None = None,
    allow_plaintext: Iterable[PathLike] = (),
    replace_recipients: bool = False,
    drop_recipients: Iterable[str] = (),
    data_key: bytes | None = None,
    stacklevel: int = 1,
    leak_hint: str = "allow_plaintext",
) -> bytes:
    """The bytes of a state document for ``tree``; the options are those of
    :func:`dump_document`."""
    return _dump(
        tree,
        provider=provider,
        stack=stack,
        previous=previous,
        additional_providers=additional_providers,
        serial=serial,
        rotate_key=rotate_key,
        strict=strict,
        allow_plaintext=allow_plaintext,
        replace_recipients=replace_recipients,
        drop_recipients=tuple(drop_recipients),
        data_key=data_key,
        stacklevel=2 + stacklevel,
        leak_hint=leak_hint,
    )[0]


def _parse(data: bytes) -> tuple[dict[str, Any], str, tuple[ProviderEntry, ...]]:
    """The parsed document, its text and its provider entries, structure checked."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateFormatError(f"a state document is bytes, not {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise format_error("it is not UTF-8 text (truncated or binary?)") from None
    try:
        raw = json.loads(text)
    except RecursionError:
        raise format_error("it is nested too deeply") from None
    except ValueError as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise format_error(f"it is not JSON{where} (truncated or edited by hand?)") from None
    if not isinstance(raw, dict):
        raise format_error("the top level is not a JSON object")
    if "veil_state" not in raw:
        raise format_error("it has no 'veil_state' field (another kind of file?)")
    version = raw["veil_state"]
    if type(version) is not int:
        raise format_error("'veil_state' is not a whole number")
    if version != FORMAT_VERSION:
        if version > FORMAT_VERSION:
            raise StateFormatError(
                f"the state document has format version {version}; this veil reads "
                f"version {FORMAT_VERSION}. Upgrade veil to read it."
            )
        raise StateFormatError(f"unknown state document format version {version}")
    keys = set(raw)
    if keys != set(_TOP_KEYS):
        missing = sorted(set(_TOP_KEYS) - keys)
        extra = sorted(keys - set(_TOP_KEYS))
        raise format_error(
            f"fields missing: {missing}, unexpected: {extra}"
            if missing
            else f"unexpected fields: {extra}"
        )
    stack = raw["stack"]
    try:
        validate_stack_name(stack)
    except InvalidStackNameError:
        raise format_error("'stack' is not a valid stack name") from None
    serial = raw["serial"]
    if type(serial) is not int or serial < 0:
        raise format_error("'serial' is not a whole number >= 0")
    kid = raw["key_id"]
    if type(kid) is not str or len(kid) != 16 or not set(kid) <= _HEX:
        raise format_error("'key_id' is not 16 lower-case hex digits")
    mac = raw["mac"]
    if type(mac) is not str or len(mac) != 64 or not set(mac) <= _HEX:
        raise format_error("'mac' is not 64 lower-case hex digits")
    return raw, text, provider_entries_from_json(raw["providers"])


def provider_entries_from_json(entries: Any) -> tuple[ProviderEntry, ...]:
    """The provider entries of a document's (or a keyring's) ``providers`` JSON list.

    Each entry is an object with exactly ``scheme`` (str), ``description`` (object)
    and ``wrapped_key`` (standard base64); anything else raises
    :class:`~veil.StateFormatError`, as does an empty list.
    """
    if type(entries) is not list or not entries:
        raise format_error("'providers' is not a non-empty list")
    out: list[ProviderEntry] = []
    for entry in entries:
        if type(entry) is not dict or set(entry) != _ENTRY_KEYS:
            raise format_error("a 'providers' entry needs exactly scheme, description, wrapped_key")
        if type(entry["scheme"]) is not str or type(entry["description"]) is not dict:
            raise format_error("a 'providers' entry has a bad scheme or description")
        if type(entry["wrapped_key"]) is not str:
            raise format_error("a 'providers' entry has a bad wrapped_key")
        try:
            wrapped = base64.b64decode(entry["wrapped_key"].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeError, ValueError):
            raise format_error("a 'wrapped_key' is not base64") from None
        if any(e.scheme == entry["scheme"] for e in out):
            # One entry per scheme: opening never costs more than one derivation or
            # service call per kind of provider, whatever the file lists.
            raise format_error(f"it has two {entry['scheme']!r} provider entries")
        out.append(
            ProviderEntry(
                scheme=entry["scheme"], description=entry["description"], wrapped_key=wrapped
            )
        )
    return tuple(out)


def read_header(data: bytes) -> DocumentHeader:
    """The clear fields of a state document, without any key or provider call.

    Checks the JSON, the structure and the format version like :func:`load_document`
    (:class:`~veil.StateFormatError`); the MAC is not checked (it needs the key), so
    the fields are only as trustworthy as the file until the document is loaded.
    """
    raw, _text, entries = _parse(data)
    return DocumentHeader(
        stack=raw["stack"], serial=raw["serial"], key_id=raw["key_id"], providers=entries
    )


def unwrap_data_key(
    provider: SecretsProvider, entries: Sequence[ProviderEntry], *, stack: str, key_id: str
) -> bytes:
    """The data key of ``stack``, unwrapped by ``provider`` from one of ``entries``.

    Each entry of the provider's scheme is tried with its stored description
    (``provider.with_description``) and the context ``{"stack": stack}``; the key
    must have the id ``key_id``. Raises :class:`~veil.KeyUnwrapError` (no entry of
    that scheme, or none gave that key), the provider's own errors (for example
    :class:`~veil.IncorrectPassphraseError`), or :class:`~veil.ProviderError` for a
    provider that fails with anything else.
    """
    return _unwrap(provider, entries, stack, key_id)[0]


def _unwrap(
    provider: SecretsProvider, entries: Sequence[ProviderEntry], stack: str, kid: str
) -> tuple[bytes, ProviderEntry]:
    scheme = getattr(provider, "scheme", None)
    candidates = [e for e in entries if e.scheme == scheme]
    if not candidates:
        known = ", ".join(sorted({e.scheme for e in entries}))
        raise KeyUnwrapError(
            f"stack {stack!r} cannot be opened with a {scheme!r} provider; it was "
            f"written for: {known}. Use one of those providers."
        )
    failure: VeilError | None = None
    context = {"stack": stack}
    for entry in candidates:
        try:
            opener = provider.with_description(entry.description)
            data_key = opener.unwrap_key(entry.wrapped_key, context)
        except VeilError as exc:
            failure = failure or exc
            continue
        except Exception as exc:  # a user provider's bug: typed, without its message
            raise ProviderError(
                f"the {scheme!r} provider failed to unwrap the data key "
                f"({type(exc).__name__}); check its configuration"
            ) from exc
        if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_SIZE:
            failure = failure or KeyUnwrapError(
                f"the {scheme!r} provider returned no valid data key for stack {stack!r}"
            )
            continue
        if key_id(data_key) != kid:
            failure = failure or KeyUnwrapError(
                f"the {scheme!r} provider unwrapped another key than the one stack "
                f"{stack!r} was written with (key id {kid})"
            )
            continue
        return data_key, entry
    assert failure is not None
    raise failure


def load_document(data: bytes, *, provider: SecretsProvider) -> Document:
    """Read a state document; the returned :class:`Document` holds the tree.

    Checks, in order: JSON (:class:`~veil.StateFormatError`), structure and format
    version (``StateFormatError``), the data key through ``provider`` (its errors:
    :class:`~veil.IncorrectPassphraseError`, :class:`~veil.KeyUnwrapError`, ...), the
    MAC (:class:`~veil.StateIntegrityError`), then each sealed value
    (``StateIntegrityError``). ``provider`` supplies credentials; its stored settings
    come from the document (``provider.with_description``).
    """
    _check_provider(provider)
    raw, text, entries = _parse(data)
    data_key, entry = _unwrap(provider, entries, raw["stack"], raw["key_id"])
    return _open_parsed(raw, text, entries, provider, data_key, entry)


def load_with_stored_providers(
    data: bytes, build: Callable[[ProviderEntry], SecretsProvider]
) -> tuple[SecretsProvider, Document]:
    """:func:`load_document` with a provider rebuilt from the document's own entries.

    ``build`` makes a provider from an entry (its scheme and stored description, with
    credentials from the environment); the entries are tried in order and the first
    that unwraps the data key is used, so the document is parsed once. If none does,
    raises the first entry's error; with several entries, its message names what went
    wrong with each.
    """
    raw, text, entries = _parse(data)
    failures: list[tuple[str, VeilError]] = []
    for candidate in entries:
        try:
            provider = build(candidate)
            _check_provider(provider)
            data_key, entry = _unwrap(provider, entries, raw["stack"], raw["key_id"])
        except VeilError as exc:
            failures.append((candidate.scheme, exc))
            continue
        return provider, _open_parsed(raw, text, entries, provider, data_key, entry)
    first = failures[0][1]  # entries is never empty
    if len(failures) == 1:
        raise first
    listing = "; ".join(f"{scheme}://: {exc}" for scheme, exc in failures)
    combined = type(first)(
        f"none of the recipients of stack {raw['stack']!r} could open it: {listing}"
    )
    raise combined from None


def _open_parsed(
    raw: dict[str, Any],
    text: str,
    entries: tuple[ProviderEntry, ...],
    provider: SecretsProvider,
    data_key: bytes,
    entry: ProviderEntry,
) -> Document:
    """The Document of a parsed file whose data key is unwrapped: MAC, then values."""
    stack: str = raw["stack"]
    cipher = ValueCipher(data_key)
    header = {k: raw[k] for k in _TOP_KEYS if k not in ("tree", "mac")}
    if not cipher.verify_mac(
        mac_input(header, canonical_tree(text, header, raw)), bytes.fromhex(raw["mac"])
    ):
        raise StateIntegrityError(
            f"the MAC of stack {stack!r} does not match: the document was edited, "
            "reordered or assembled from pieces of other documents. Restore a good copy "
            "(the store keeps history)."
        )
    opener = Opener(cipher)
    try:
        # The walk replaces markers in place: the parsed tree is ours alone.
        tree = opener.walk(raw["tree"], aad_prefix(stack))
    except RecursionError:
        raise format_error("it is nested too deeply") from None
    return Document(
        stack=stack,
        serial=raw["serial"],
        key_id=raw["key_id"],
        providers=entries,
        data_key=data_key,
        cipher=cipher,
        sealed=opener.sealed,
        tree_text=None,  # only needed to build the tree, which is already here
        opened_by=((provider, entry),),
        tree_box=[tree],
    )


def loads(data: bytes, *, provider: SecretsProvider) -> Any:
    """The tree of a state document, each sealed leaf as a :class:`~veil.Secret`.

    See :func:`load_document` for the checks and errors.
    """
    return load_document(data, provider=provider).tree
