"""One exception hierarchy: every error veil raises is a :class:`VeilError`.

Callers catch ``VeilError`` (or one of the narrower classes below) and never have to
parse messages. Messages say what went wrong and what to do next; they never contain
the plaintext of a secret.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigMissingError",
    "ConfigStateMismatchError",
    "DecryptionError",
    "EphemeralValueError",
    "IncorrectPassphraseError",
    "InvalidStackNameError",
    "InvalidValueError",
    "KeyFilePermissionError",
    "KeyUnwrapError",
    "LeakWarning",
    "OutputToStringError",
    "PassphraseRequiredError",
    "PendingOutputError",
    "PlaintextLeakError",
    "ProviderAccessError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderKeyError",
    "ProviderUnavailableError",
    "SchemaError",
    "SecretPathError",
    "SecretPickleError",
    "StackExistsError",
    "StackNotFoundError",
    "StateError",
    "StateFormatError",
    "StateIntegrityError",
    "StateLockedError",
    "StateRollbackError",
    "StoreAccessError",
    "StoreUnavailableError",
    "TrustError",
    "UnknownProviderError",
    "UnknownSchemaError",
    "UnknownValueError",
    "UsageError",
    "VeilError",
]


class VeilError(Exception):
    """Base class of every error raised by veil."""


# --- Outputs and secrets -------------------------------------------------------------


class OutputToStringError(VeilError, TypeError):
    """An Output was converted to ``str`` (``str()``, ``format()``, an f-string).

    An Output's value may not exist yet and may be secret, so it has no string form.
    Use ``o.apply(lambda v: f"...{v}...")``, ``Output.format`` or ``Output.concat``.
    """


class PendingOutputError(VeilError):
    """A synchronous read (``reveal``, ``is_secret``, ``state.dumps``) met an Output
    whose value has not arrived yet. Await it first, or use the async variant."""


class UnknownValueError(VeilError):
    """A value is unknown (a preview value): it cannot be revealed or written."""


class InvalidValueError(VeilError, TypeError):
    """A value of a type veil cannot handle in that place (for example a non-JSON
    value in state, or an Output given where a known value is required)."""


class UsageError(VeilError, ValueError):
    """An API was called with arguments that cannot work together (for example
    ``Output.all`` with both positional and keyword inputs)."""


class SecretPickleError(VeilError, TypeError):
    """Pickling a secret is refused: a pickle would hold its plaintext."""


# --- Secret by declaration ------------------------------------------------------------


class SchemaError(VeilError):
    """Base class of errors about declared secret fields and secret paths
    (``veil.mark_secret``, ``veil.register_secret_paths``, the ``veil.secret_schemas``
    entry points)."""


class SecretPathError(SchemaError, ValueError):
    """A secret path is malformed. The message quotes the path and says where it
    goes wrong; paths look like ``conn.password``, ``hosts[0]``, ``users[*].token``,
    ``zones.*.apiKey`` or ``tags["a.b"]``."""


class UnknownSchemaError(SchemaError, LookupError):
    """No secret paths are registered for a type token: neither by
    ``veil.register_secret_paths`` nor by an installed ``veil.secret_schemas`` entry
    point."""


class EphemeralValueError(VeilError):
    """An ephemeral value (``veil.ephemeral``) was about to be written: to state,
    config, a Pulumi checkpoint or a stack export. Nothing was written.

    :attr:`paths` names every place that holds one (paths, never values). Leave the
    value out, or store ``veil.fingerprint(value)`` there instead.
    """

    def __init__(self, message: str, paths: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.paths: tuple[str, ...] = tuple(paths)

    def __reduce__(self) -> tuple[type[EphemeralValueError], tuple[str, tuple[str, ...]]]:
        return (type(self), (str(self), self.paths))


# --- Cryptography ----------------------------------------------------------------------


class DecryptionError(VeilError):
    """A ciphertext could not be opened: it is malformed, truncated, tampered with,
    moved to another path or stack, or sealed under another key."""


class KeyUnwrapError(DecryptionError):
    """A provider could not unwrap the stack's data key: wrong key, wrong context
    (another stack) or a corrupted wrapped key."""


class IncorrectPassphraseError(KeyUnwrapError):
    """The passphrase does not open this stack. Nothing was written."""


# --- Providers -------------------------------------------------------------------------


class ProviderError(VeilError):
    """A secrets provider could not be built or used."""


class UnknownProviderError(ProviderError, ValueError):
    """No secrets provider is registered for a URL scheme."""


class ProviderConfigError(ProviderError, ValueError):
    """A provider URL or stored provider description is invalid or incomplete."""


class ProviderUnavailableError(ProviderError):
    """The provider's service could not be reached or refused the request."""


class PassphraseRequiredError(ProviderError):
    """A passphrase is needed and none was given (no argument, no ``VEIL_PASSPHRASE``,
    no ``VEIL_PASSPHRASE_FILE``, no terminal to ask on)."""


class KeyFilePermissionError(ProviderError):
    """A local key file is readable by other users; ``chmod 600`` it."""


class ProviderAccessError(ProviderError):
    """A key service refused the caller: credentials missing, invalid or expired, or a
    permission they lack. The message names the credential source or the permission."""


class ProviderKeyError(ProviderError):
    """A key service's key cannot be used: it does not exist, was deleted or disabled,
    or is of a type that cannot encrypt (a signing key, for example)."""


# --- State, stacks and config ------------------------------------------------------------


class StateError(VeilError):
    """Base class of errors about stored state."""


class StateFormatError(StateError):
    """The bytes are not a veil document this version can read: truncated, foreign,
    malformed or of an unknown format version."""


class StateIntegrityError(StateError):
    """The document's MAC does not match: it was edited, reordered or assembled from
    pieces of other documents."""


class StateLockedError(StateError):
    """Another writer holds the stack's lock."""


class StoreUnavailableError(StateError):
    """The state store could not be reached in time (network down, wrong endpoint,
    service not answering). Nothing was written."""


class StoreAccessError(StateError):
    """The state store refused or failed the request: access denied, missing or
    expired credentials, the bucket, container, table, database or folder missing or
    not writable. Nothing was written."""


class StackNotFoundError(StateError):
    """No stack of that name exists in the backend."""


class InvalidStackNameError(StateError, ValueError):
    """A stack name is not valid: empty, too long, or holding characters other than
    ``A-Z a-z 0-9 . _ -`` (a name like ``../x`` could escape the state folder)."""


class StackExistsError(StateError):
    """A stack of that name already exists in the backend."""


class TrustError(StateError):
    """What protects a stack did not check out: the committed config and the state
    disagree, or the state is older than one this project folder has already seen.
    Nothing was written and no key was used for anything new."""


class ConfigStateMismatchError(TrustError):
    """The config file and the state do not vouch for each other: they name other
    recipients or another data key, or the config holds an older secure value than the
    one last saved. After a legitimate change elsewhere, pull the config (or the
    state); otherwise one of them was replaced, and this error stopped its use."""


class StateRollbackError(TrustError):
    """The state is older (a lower serial) than the newest one this project folder
    has seen. Restore deliberately with ``Stack.open(..., allow_rollback=True)`` or
    ``veil stack import``."""


class PlaintextLeakError(StateError):
    """Strict mode: a plain value holds the plaintext of a secret, looks like a
    credential, or sits at a path the previous save sealed, and would have been
    written unencrypted."""


class ConfigError(VeilError):
    """Base class of configuration errors."""


class ConfigMissingError(ConfigError, KeyError):
    """A required configuration key is not set."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --- Warnings ------------------------------------------------------------------------------


class LeakWarning(UserWarning):
    """A plain value held the plaintext of a secret, looked like a credential, or sat
    at a path the previous save sealed, and was encrypted anyway. Mark it secret where
    it is made (``veil.secret``, a declared field), or list its path in
    ``allow_plaintext`` if it really is public."""
