"""Pulumi checkpoints (and ``pulumi stack export`` files): read with their secrets
decrypted into :class:`veil.Secret` leaves, written with every secret encrypted.

A Pulumi secret in state is ``{SIG_KEY: SECRET_SIG, "ciphertext": Enc(json(value))}``
(see :mod:`veil.interop.pulumi._crypter` for ``Enc``).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, NoReturn

from ..._ephemeral import ephemeral_refusal
from ..._secret import Secret, is_ephemeral, is_output, is_secret, reveal
from ...errors import (
    DecryptionError,
    InvalidValueError,
    ProviderConfigError,
    StateFormatError,
)
from ._crypter import PassphraseCrypter, passphrase_from_env

__all__ = [
    "PROVIDER_TYPE",
    "SECRET_SIG",
    "SIG_KEY",
    "crypter_from_checkpoint",
    "dump_checkpoint",
    "load_checkpoint",
]

SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
"""The key that marks a special object in Pulumi state."""
SECRET_SIG: Final = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (a type tag)
"""The value of :data:`SIG_KEY` in a secret object."""
PROVIDER_TYPE: Final = "passphrase"
"""The type of Pulumi's passphrase secrets provider in a checkpoint."""


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes | bytearray | memoryview | str, what: str) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise StateFormatError(f"this {what} is not UTF-8 text: it is not JSON") from None
    elif isinstance(data, str):
        text = data
    else:
        raise InvalidValueError(f"a {what} is bytes or str, not {type(data).__name__}")
    # Raised after the except block: json's error holds the whole text (.doc), which
    # may hold secrets in Pulumi's "plaintext" form.
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})"
    except (ValueError, RecursionError):
        where = ""
    raise StateFormatError(f"this {what} is not valid JSON{where}: it is truncated or damaged")


_NOT_JSON: Final = object()


def _secret_json(text: str) -> Any:
    """The JSON value of a secret's plaintext, or ``_NOT_JSON``: json's exception (its
    ``doc`` is the plaintext) never leaves this function."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _deployment(tree: Any) -> dict[str, Any] | None:
    """The deployment of a checkpoint (``checkpoint.latest``) or export (``deployment``)."""
    if not isinstance(tree, dict):
        return None
    checkpoint = tree.get("checkpoint")
    if isinstance(checkpoint, dict):
        latest = checkpoint.get("latest")
        return latest if isinstance(latest, dict) else None
    deployment = tree.get("deployment")
    return deployment if isinstance(deployment, dict) else None


def _declared_provider(tree: Any) -> tuple[str | None, str | None]:
    """(type, passphrase salt) of the secrets provider a checkpoint names, if any."""
    deployment = _deployment(tree)
    if deployment is None:
        return None, None
    providers = deployment.get("secrets_providers")
    if not isinstance(providers, dict):
        return None, None
    kind = providers.get("type")
    state = providers.get("state")
    salt = state.get("salt") if isinstance(state, dict) else None
    return (kind if isinstance(kind, str) else None), (salt if isinstance(salt, str) else None)


def _format_path(path: list[str | int]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class _LoadContext:
    __slots__ = ("crypter", "foreign", "path", "salt_differs")

    def __init__(self, crypter: PassphraseCrypter, tree: Any) -> None:
        self.crypter = crypter
        self.path: list[str | int] = []
        kind, salt = _declared_provider(tree)
        self.foreign = kind if kind not in (None, PROVIDER_TYPE) else None
        self.salt_differs = salt is not None and not crypter.same_key(salt)


def _load_node(node: Any, ctx: _LoadContext) -> Any:
    if isinstance(node, dict):
        if node.get(SIG_KEY) == SECRET_SIG:
            return _load_secret(node, ctx)
        out: dict[str, Any] = {}
        path = ctx.path
        for key, value in node.items():
            path.append(key)
            out[key] = _load_node(value, ctx)
            path.pop()
        return out
    if isinstance(node, list):
        items: list[Any] = []
        path = ctx.path
        for index, value in enumerate(node):
            path.append(index)
            items.append(_load_node(value, ctx))
            path.pop()
        return items
    return node


def _load_secret(node: dict[str, Any], ctx: _LoadContext) -> Secret[Any]:
    ciphertext = node.get("ciphertext")
    plaintext = node.get("plaintext")
    has_ciphertext = isinstance(ciphertext, str)
    if has_ciphertext == isinstance(plaintext, str):
        raise StateFormatError(
            f"malformed Pulumi secret object at {_format_path(ctx.path)}: exactly one of "
            "'ciphertext' or 'plaintext' (a string) must be present"
        )
    if has_ciphertext:
        if ctx.foreign is not None:
            raise ProviderConfigError(
                f"this checkpoint's secrets are protected by Pulumi's {ctx.foreign!r} secrets "
                "provider; only passphrase stacks can be read here (run `pulumi stack "
                "change-secrets-provider passphrase` first)"
            )
        try:
            text = ctx.crypter.decrypt(ciphertext)  # type: ignore[arg-type]
        except DecryptionError as exc:
            hint = (
                " The checkpoint names another salt than this crypter's: build the crypter "
                "with crypter_from_checkpoint(data, passphrase)."
                if ctx.salt_differs
                else ""
            )
            raise DecryptionError(
                f"cannot decrypt the secret at {_format_path(ctx.path)}: {exc}.{hint}"
            ) from None
    else:
        text = plaintext  # type: ignore[assignment]
    value = _secret_json(text)
    if value is _NOT_JSON:
        # Raised here, not in an except block: the JSONDecodeError holds the decrypted
        # text (.doc) and must not become this error's __context__.
        raise StateFormatError(f"the secret at {_format_path(ctx.path)} does not hold a JSON value")
    secret: Secret[Any] = Secret(value)
    if has_ciphertext:
        ctx.crypter.remember_ciphertext(secret, text, ciphertext)  # type: ignore[arg-type]
    return secret


def load_checkpoint(data: bytes | str, crypter: PassphraseCrypter) -> Any:
    """Read a Pulumi checkpoint (or any JSON document), decrypting its secrets.

    Every Pulumi secret object ``{SIG_KEY: SECRET_SIG, "ciphertext": "v1:..."}`` (or
    with ``"plaintext"``, as Pulumi accepts in imported deployments) becomes a
    :class:`veil.Secret` holding the JSON value it encodes; every other value is
    returned as :func:`json.loads` returns it. The checkpoint may be a stack file of
    Pulumi's file backend (``{"version": 3, "checkpoint": {...}}``) or the output of
    ``pulumi stack export`` (``{"version": 3, "deployment": {...}}``).

    Raises :class:`veil.StateFormatError` for input that is not JSON or a malformed
    secret object, :class:`veil.DecryptionError` (naming the JSON path) for a secret
    that does not decrypt, and :class:`veil.ProviderConfigError` when the checkpoint's
    secrets belong to another Pulumi secrets provider than ``passphrase``.
    """
    tree = _parse_json(data, "Pulumi checkpoint")
    ctx = _LoadContext(crypter, tree)
    try:
        return _load_node(tree, ctx)
    except RecursionError:
        raise StateFormatError("this Pulumi checkpoint is nested too deeply to read") from None


class _DumpContext:
    __slots__ = ("crypter", "ephemeral", "path", "wrote_secrets")

    def __init__(self, crypter: PassphraseCrypter) -> None:
        self.crypter = crypter
        self.path: list[str | int] = []
        self.wrote_secrets = False
        self.ephemeral: list[str] = []  # paths of ephemeral values: the dump is refused


def _check_scalar(node: Any, path: list[str | int]) -> Any:
    if node is None or isinstance(node, (str, bool, int)):
        return node
    if isinstance(node, float):
        if not math.isfinite(node):
            raise InvalidValueError(
                f"the number at {_format_path(path)} is not finite; JSON cannot hold it"
            )
        return node
    raise InvalidValueError(
        f"the value at {_format_path(path)} is a {type(node).__name__}, which JSON cannot "
        "hold; convert it to str, int, float, bool, None, list or dict"
    )


def _plain(node: Any, path: list[str | int], ephemeral: list[str]) -> Any:
    """A JSON value with every Secret and Output inside revealed (it will be sealed);
    the path of each ephemeral Output met is added to ``ephemeral``."""
    if is_output(node) and is_ephemeral(node):
        ephemeral.append(_format_path(path))
        return None
    if isinstance(node, Secret) or is_output(node):
        return _plain(reveal(node), path, ephemeral)
    if isinstance(node, dict):
        # The container loop of _dump_node below, without its secret handling: a
        # shared walker would need a hook per leaf kind for two six-line loops.
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise InvalidValueError(
                    f"a key at {_format_path(path)} is a {type(key).__name__}; JSON keys are str"
                )
            path.append(key)
            out[key] = _plain(value, path, ephemeral)
            path.pop()
        return out
    if isinstance(node, (list, tuple)):
        items: list[Any] = []
        for index, value in enumerate(node):
            path.append(index)
            items.append(_plain(value, path, ephemeral))
            path.pop()
        return items
    return _check_scalar(node, path)


def _seal(value: Any, ctx: _DumpContext, secret: Secret[Any] | None) -> dict[str, str]:
    plain = _plain(value, ctx.path, ctx.ephemeral)
    if ctx.ephemeral:
        return {}  # the dump is refused: seal nothing more
    text = json.dumps(plain, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    ciphertext = ctx.crypter.reused_ciphertext(secret, text)
    if ciphertext is None:
        ciphertext = ctx.crypter.encrypt(text)
    ctx.wrote_secrets = True
    return {SIG_KEY: SECRET_SIG, "ciphertext": ciphertext}


def _dump_node(node: Any, ctx: _DumpContext) -> Any:
    if isinstance(node, Secret):
        return _seal(node.reveal(), ctx, node)
    if is_output(node):
        # reveal() raises PendingOutputError / UnknownValueError for unresolved Outputs.
        if is_ephemeral(node):
            ctx.ephemeral.append(_format_path(ctx.path))
            return None
        if is_secret(node):
            return _seal(reveal(node), ctx, None)
        return _dump_node(reveal(node), ctx)
    if isinstance(node, dict):
        path = ctx.path
        if node.get(SIG_KEY) == SECRET_SIG and isinstance(node.get("plaintext"), str):
            # A secret object in plaintext form: encrypt it, never write its plaintext.
            value = _secret_json(node["plaintext"])
            if value is _NOT_JSON:  # raised outside json's error, which holds the plaintext
                raise InvalidValueError(
                    f"the secret object at {_format_path(path)} has a 'plaintext' that is not JSON"
                )
            return _seal(value, ctx, None)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise InvalidValueError(
                    f"a key at {_format_path(path)} is a {type(key).__name__}; JSON keys are str"
                )
            path.append(key)
            out[key] = _dump_node(value, ctx)
            path.pop()
        return out
    if isinstance(node, (list, tuple)):
        items: list[Any] = []
        path = ctx.path
        for index, value in enumerate(node):
            path.append(index)
            items.append(_dump_node(value, ctx))
            path.pop()
        return items
    return _check_scalar(node, ctx.path)


def _name_provider(tree: Any, crypter: PassphraseCrypter, wrote_secrets: bool) -> None:
    """Make the checkpoint name this crypter's salt, so Pulumi can open what was written."""
    deployment = _deployment(tree)
    if deployment is None:
        return
    providers = deployment.get("secrets_providers")
    if providers is None:
        if wrote_secrets:
            deployment["secrets_providers"] = {
                "type": PROVIDER_TYPE,
                "state": {"salt": crypter.encryptionsalt},
            }
        return
    if isinstance(providers, dict) and providers.get("type") == PROVIDER_TYPE:
        state = providers.get("state")
        state = dict(state) if isinstance(state, dict) else {}
        state["salt"] = crypter.encryptionsalt
        providers["state"] = state
        return
    if wrote_secrets:
        kind = providers.get("type") if isinstance(providers, dict) else providers
        raise ProviderConfigError(
            f"this checkpoint names Pulumi's {kind!r} secrets provider, but its secrets are "
            "written with a passphrase; set secrets_providers to "
            "{'type': 'passphrase', 'state': {'salt': crypter.encryptionsalt}} or remove it"
        )


def dump_checkpoint(tree: Any, crypter: PassphraseCrypter) -> bytes:
    """Write a Pulumi checkpoint (or any JSON document), encrypting its secrets.

    Every :class:`veil.Secret` leaf, and every resolved secret veil Output, becomes a
    Pulumi secret object whose ciphertext encrypts the JSON encoding of its value
    (Secrets nested inside it included). A Pulumi secret object in ``"plaintext"`` form
    is encrypted too, so no secret is written in the clear. A Secret that was read with
    :func:`load_checkpoint` under the same crypter and is unchanged keeps its
    ciphertext. Other values are written as they are.

    When the tree is a Pulumi checkpoint or export, its
    ``secrets_providers`` is set to ``passphrase`` with this crypter's salt (added if
    absent and secrets were written), so Pulumi opens the result with the same
    passphrase; loading with one crypter and dumping with another re-encrypts every
    secret (a passphrase change).

    Output: UTF-8 JSON indented by four spaces, as Pulumi writes it, ending in a newline.
    Raises :class:`veil.InvalidValueError` for a value JSON cannot hold,
    :class:`veil.PendingOutputError` / :class:`veil.UnknownValueError` for an Output
    without a known value, :class:`veil.ProviderConfigError` when the checkpoint names
    another secrets provider, :class:`veil.EphemeralValueError` (naming every path)
    for ephemeral values, which are never written.
    """
    ctx = _DumpContext(crypter)
    try:
        out = _dump_node(tree, ctx)
    except RecursionError:
        raise InvalidValueError("the tree is nested too deeply to write as JSON") from None
    if ctx.ephemeral:
        raise ephemeral_refusal(ctx.ephemeral, "the checkpoint")
    _name_provider(out, crypter, ctx.wrote_secrets)
    text = json.dumps(out, indent=4, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def crypter_from_checkpoint(
    data: bytes | str, passphrase: str | Secret[str] | None = None
) -> PassphraseCrypter:
    """Open the key of a Pulumi checkpoint from the salt it names
    (``checkpoint.latest.secrets_providers.state.salt``, or ``deployment...`` in an export).

    ``passphrase=None`` uses :func:`passphrase_from_env`. Raises
    :class:`veil.StateFormatError` when the checkpoint is not JSON or names no salt,
    :class:`veil.ProviderConfigError` when it names another secrets provider, and
    :class:`veil.IncorrectPassphraseError` for a wrong passphrase.
    """
    tree = _parse_json(data, "Pulumi checkpoint")
    kind, salt = _declared_provider(tree)
    if kind is not None and kind != PROVIDER_TYPE:
        raise ProviderConfigError(
            f"this checkpoint uses Pulumi's {kind!r} secrets provider, not 'passphrase'"
        )
    if salt is None:
        raise StateFormatError(
            "this Pulumi checkpoint names no passphrase salt "
            "(checkpoint.latest.secrets_providers.state.salt); take the encryptionsalt from "
            "Pulumi.<stack>.yaml and use PassphraseCrypter(passphrase, encryptionsalt)"
        )
    if passphrase is None:
        passphrase = passphrase_from_env()
    return PassphraseCrypter(passphrase, salt)
