"""Secrets providers: the compliance suite for each built-in, then each one's own rules."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import veil
from veil.crypto import generate_data_key
from veil.providers import (
    AgeProvider,
    LocalKeyProvider,
    PassphraseProvider,
    SecretsProvider,
    known_schemes,
    provider_from_description,
    provider_from_url,
    register_provider,
)
from veil.providers import passphrase as passphrase_module
from veil.testing import ProviderComplianceSuite, Restore

CTX = {"stack": "dev"}
# Below OWASP's minimums, to keep the tests fast: every use opts out explicitly.
WEAK: dict[str, Any] = {"insecure_weak_kdf": True}
FAST_ARGON2: dict[str, Any] = {"memory_cost": 64, "iterations": 1, "lanes": 1, **WEAK}
FAST_PBKDF2: dict[str, Any] = {"kdf": "pbkdf2", "iterations": 1000, **WEAK}
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VEIL_PASSPHRASE", "VEIL_PASSPHRASE_FILE", "VEIL_AGE_IDENTITY"):
        monkeypatch.delenv(name, raising=False)


# --- compliance suite, once per built-in provider ------------------------------------


class TestPassphraseArgon2Compliance(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self) -> SecretsProvider:
        return PassphraseProvider(PASSPHRASE, **FAST_ARGON2)

    @pytest.fixture
    def other_provider(self) -> SecretsProvider:
        return PassphraseProvider("another passphrase", **FAST_ARGON2)

    @pytest.fixture
    def restore(self, monkeypatch: pytest.MonkeyPatch) -> Restore:
        monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
        return functools.partial(PassphraseProvider.from_description, **WEAK)


class TestPassphrasePbkdf2Compliance(TestPassphraseArgon2Compliance):
    @pytest.fixture
    def provider(self) -> SecretsProvider:
        return PassphraseProvider(PASSPHRASE, **FAST_PBKDF2)

    @pytest.fixture
    def other_provider(self) -> SecretsProvider:
        return PassphraseProvider("another passphrase", **FAST_PBKDF2)


class TestLocalKeyCompliance(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self, tmp_path: Path) -> SecretsProvider:
        return LocalKeyProvider(tmp_path / "a.key")

    @pytest.fixture
    def other_provider(self, tmp_path: Path) -> SecretsProvider:
        other = LocalKeyProvider(tmp_path / "b.key")
        other.describe()  # creates its key file
        return other


@pytest.mark.parametrize("shows", ["data key", "wrapped key"])
def test_compliance_suite_catches_a_repr_showing_key_material(tmp_path: Path, shows: str) -> None:
    seen: list[bytes] = []

    class Showing(LocalKeyProvider):
        def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
            wrapped = super().wrap_key(data_key, context)
            seen.append(data_key if shows == "data key" else wrapped)
            return wrapped

        def __repr__(self) -> str:
            return f"Showing({seen[-1].hex() if seen else ''})"

    suite = ProviderComplianceSuite()
    with pytest.raises(AssertionError, match=f"repr shows the {shows}"):
        suite.test_repr_does_not_show_a_wrapped_or_data_key(Showing(tmp_path / "k.key"))


def new_identity() -> tuple[str, str]:
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


ID1, RCPT1 = new_identity()
ID2, RCPT2 = new_identity()


class TestAgeCompliance(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self) -> SecretsProvider:
        return AgeProvider(RCPT1, identities=[ID1])

    @pytest.fixture
    def other_provider(self) -> SecretsProvider:
        return AgeProvider(RCPT2, identities=[ID2])

    @pytest.fixture
    def restore(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Restore:
        (tmp_path / "id.txt").write_text(ID1 + "\n")
        monkeypatch.setenv("VEIL_AGE_IDENTITY", str(tmp_path / "id.txt"))
        return AgeProvider.from_description


# --- passphrase -------------------------------------------------------------------


def test_no_passphrase_and_no_terminal_raises_at_once_naming_the_variables(
    tmp_path: Path,
) -> None:
    code = textwrap.dedent(
        """
        import veil
        from veil.providers import PassphraseProvider
        try:
            weak = PassphraseProvider(memory_cost=64, iterations=1, lanes=1, insecure_weak_kdf=True)
            weak.wrap_key(b"k" * 32, {})
        except veil.PassphraseRequiredError as exc:
            print("REQUIRED:", exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.stdout.startswith("REQUIRED:"), done.stderr
    assert "VEIL_PASSPHRASE" in done.stdout
    assert "VEIL_PASSPHRASE_FILE" in done.stdout


def test_passphrase_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    key = generate_data_key()
    writer = PassphraseProvider(**FAST_ARGON2)
    wrapped = writer.wrap_key(key, CTX)
    monkeypatch.delenv("VEIL_PASSPHRASE")
    reader = PassphraseProvider(PASSPHRASE, **WEAK).with_description(writer.describe())
    assert reader.unwrap_key(wrapped, CTX) == key


def test_passphrase_from_file_drops_one_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("VEIL_PASSPHRASE_FILE", str(tmp_path / "pw"))
    key = generate_data_key()
    writer = PassphraseProvider(**FAST_ARGON2)
    wrapped = writer.wrap_key(key, CTX)
    reader = PassphraseProvider(PASSPHRASE, **WEAK).with_description(writer.describe())
    assert reader.unwrap_key(wrapped, CTX) == key


def test_environment_variable_wins_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("from the file")
    monkeypatch.setenv("VEIL_PASSPHRASE_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    writer = PassphraseProvider(**FAST_ARGON2)
    key = generate_data_key()
    wrapped = writer.wrap_key(key, CTX)
    reader = PassphraseProvider(PASSPHRASE, **WEAK).with_description(writer.describe())
    assert reader.unwrap_key(wrapped, CTX) == key


def test_unreadable_passphrase_file_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_PASSPHRASE_FILE", str(tmp_path / "missing"))
    with pytest.raises(veil.ProviderConfigError, match="missing"):
        PassphraseProvider(**FAST_ARGON2).wrap_key(generate_data_key(), CTX)


def test_empty_passphrase_argument_is_refused() -> None:
    with pytest.raises(veil.ProviderConfigError, match="empty"):
        PassphraseProvider("")


def test_empty_passphrase_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_PASSPHRASE", "")
    with pytest.raises(veil.ProviderConfigError, match="empty"):
        PassphraseProvider(**FAST_ARGON2).wrap_key(generate_data_key(), CTX)


def test_empty_passphrase_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("\n")
    monkeypatch.setenv("VEIL_PASSPHRASE_FILE", str(tmp_path / "pw"))
    with pytest.raises(veil.ProviderConfigError, match="empty"):
        PassphraseProvider(**FAST_ARGON2).wrap_key(generate_data_key(), CTX)


def test_wrong_passphrase_raises_incorrect_passphrase_error() -> None:
    writer = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    wrapped = writer.wrap_key(generate_data_key(), CTX)
    reader = PassphraseProvider("not it", **WEAK).with_description(
        json.loads(json.dumps(writer.describe()))
    )
    with pytest.raises(veil.IncorrectPassphraseError) as info:
        reader.unwrap_key(wrapped, CTX)
    message = str(info.value)
    assert "VEIL_PASSPHRASE" in message
    assert "not it" not in message
    assert PASSPHRASE not in message


def test_wrong_passphrase_from_environment_raises_incorrect_passphrase_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    wrapped = writer.wrap_key(generate_data_key(), CTX)
    monkeypatch.setenv("VEIL_PASSPHRASE", "wrong")
    reader = PassphraseProvider.from_description(writer.describe(), **WEAK)
    with pytest.raises(veil.IncorrectPassphraseError):
        reader.unwrap_key(wrapped, CTX)


def test_wrong_passphrase_is_refused_for_wrapping_too() -> None:
    writer = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    writer.wrap_key(generate_data_key(), CTX)
    reader = PassphraseProvider("not it", **WEAK).with_description(writer.describe())
    with pytest.raises(veil.IncorrectPassphraseError):
        reader.wrap_key(generate_data_key(), CTX)


def test_passphrase_is_never_in_repr_or_description() -> None:
    provider = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    provider.wrap_key(generate_data_key(), CTX)
    assert PASSPHRASE not in repr(provider)
    assert PASSPHRASE not in json.dumps(provider.describe())
    assert PASSPHRASE not in provider.url


def test_passphrase_may_be_a_secret() -> None:
    writer = PassphraseProvider(veil.Secret(PASSPHRASE), **FAST_ARGON2)
    key = generate_data_key()
    wrapped = writer.wrap_key(key, CTX)
    assert (
        PassphraseProvider(PASSPHRASE, **WEAK)
        .with_description(writer.describe())
        .unwrap_key(wrapped, CTX)
        == key
    )


def test_key_derivation_runs_once_per_process_for_a_passphrase_and_salt() -> None:
    writer = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    key = generate_data_key()
    before = passphrase_module.derivation_count()
    wrapped = writer.wrap_key(key, CTX)
    description = writer.describe()
    for _ in range(3):
        reader = PassphraseProvider(PASSPHRASE, **WEAK).with_description(description)
        assert reader.unwrap_key(wrapped, CTX) == key
    assert passphrase_module.derivation_count() == before + 1


def test_another_salt_derives_again() -> None:
    before = passphrase_module.derivation_count()
    PassphraseProvider(PASSPHRASE, **FAST_ARGON2).wrap_key(generate_data_key(), CTX)
    PassphraseProvider(PASSPHRASE, **FAST_ARGON2).wrap_key(generate_data_key(), CTX)
    assert passphrase_module.derivation_count() == before + 2


def test_clear_cache_forces_a_new_derivation() -> None:
    writer = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    wrapped = writer.wrap_key(generate_data_key(), CTX)
    description = writer.describe()
    passphrase_module.clear_cache()
    before = passphrase_module.derivation_count()
    PassphraseProvider(PASSPHRASE, **WEAK).with_description(description).unwrap_key(wrapped, CTX)
    assert passphrase_module.derivation_count() == before + 1


def test_defaults_are_argon2id_64_mib_3_passes_4_lanes() -> None:
    provider = PassphraseProvider(PASSPHRASE)
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CTX)
    description = provider.describe()
    assert description["kdf"] == "argon2id"
    assert (description["memory_cost"], description["iterations"], description["lanes"]) == (
        65536,
        3,
        4,
    )
    assert len(__import__("base64").b64decode(description["salt"])) == 16
    assert provider.unwrap_key(wrapped, CTX) == key


def test_pbkdf2_default_is_600000_iterations() -> None:
    provider = PassphraseProvider(PASSPHRASE, kdf="pbkdf2")
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CTX)
    assert provider.describe()["kdf"] == "pbkdf2-sha256"
    assert provider.describe()["iterations"] == 600_000
    assert provider.unwrap_key(wrapped, CTX) == key


def test_stored_parameters_win_over_the_readers_defaults() -> None:
    writer = PassphraseProvider(PASSPHRASE, memory_cost=128, iterations=2, lanes=2, **WEAK)
    key = generate_data_key()
    wrapped = writer.wrap_key(key, CTX)
    reader = PassphraseProvider(PASSPHRASE, **WEAK).with_description(writer.describe())
    assert reader.describe()["memory_cost"] == 128
    assert reader.unwrap_key(wrapped, CTX) == key


@pytest.mark.parametrize(
    "change",
    [
        {"memory_cost": 2**40},
        {"iterations": 0},
        {"lanes": "four"},
        {"kdf": "scrypt"},
        {"salt": "!!not base64"},
        {"salt": "AAAA"},
        {"version": 99},
    ],
)
def test_invalid_stored_settings_are_refused(change: dict[str, Any]) -> None:
    writer = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    writer.wrap_key(generate_data_key(), CTX)
    with pytest.raises(veil.ProviderConfigError):
        PassphraseProvider.from_description({**writer.describe(), **change}, **WEAK)


def test_passphrase_url_takes_settings_and_refuses_a_path() -> None:
    provider = provider_from_url("passphrase://?kdf=pbkdf2&iterations=600000")
    assert isinstance(provider, PassphraseProvider)
    assert provider.url == "passphrase://?kdf=pbkdf2"
    with pytest.raises(veil.ProviderConfigError):
        provider_from_url("passphrase://secret-in-url")
    with pytest.raises(veil.ProviderConfigError):
        provider_from_url("passphrase://?colour=blue")


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000, "-1", "1.5"])
def test_non_ascii_or_huge_numbers_in_a_passphrase_url_are_refused(value: str) -> None:
    for name in ("iterations", "memory_cost", "lanes"):
        with pytest.raises(veil.ProviderConfigError, match=name):
            provider_from_url(f"passphrase://?{name}={value}")


def test_non_ascii_digits_in_stored_passphrase_settings_are_refused() -> None:
    writer = PassphraseProvider(PASSPHRASE, **FAST_ARGON2)
    with pytest.raises(veil.ProviderConfigError, match="iterations"):
        PassphraseProvider.from_description({**writer.describe(), "iterations": "\u00b2"}, **WEAK)


# --- local key file ----------------------------------------------------------------


def test_key_file_path_with_a_nul_is_refused() -> None:
    with pytest.raises(veil.ProviderConfigError, match="NUL"):
        provider_from_url("file://dev%00.key")


def test_key_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dev.key"
    folder.mkdir(mode=0o700)
    with pytest.raises(veil.ProviderConfigError, match="not a regular file"):
        LocalKeyProvider(folder).wrap_key(generate_data_key(), CTX)


def test_key_file_write_that_fails_leaves_no_partial_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dev.key"

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(veil.ProviderConfigError, match="No space left"):
        LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []  # neither the key file nor a temporary one
    LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)  # a retry creates it
    assert len(path.read_bytes().strip()) == 44


def test_key_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "dev.key"
    LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes().strip()) == 44


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o660, 0o602])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "dev.key"
    provider = LocalKeyProvider(path)
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    path.chmod(mode)
    with pytest.raises(veil.KeyFilePermissionError, match=f"chmod 600 {path}"):
        LocalKeyProvider(path).unwrap_key(wrapped, CTX)


def test_missing_key_file_on_open_says_so(tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "gone.key")
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    description = provider.describe()
    (tmp_path / "gone.key").unlink()
    with pytest.raises(veil.ProviderConfigError, match="does not exist"):
        LocalKeyProvider.from_description(description).unwrap_key(wrapped, CTX)
    assert not (tmp_path / "gone.key").exists()


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "dev.key"
    LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)
    before = path.read_bytes()
    LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)
    assert path.read_bytes() == before


def test_raw_32_byte_key_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "raw.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    key = generate_data_key()
    assert LocalKeyProvider(path).unwrap_key(LocalKeyProvider(path).wrap_key(key, CTX), CTX) == key


def test_key_file_without_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"not a key\n")
    os.close(fd)
    with pytest.raises(veil.ProviderConfigError, match="32-byte key"):
        LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)


def test_replaced_key_file_is_told_by_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "dev.key"
    provider = LocalKeyProvider(path)
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    description = provider.describe()
    path.unlink()
    LocalKeyProvider(tmp_path / "dev.key").wrap_key(generate_data_key(), CTX)
    with pytest.raises(veil.KeyUnwrapError, match="fingerprint"):
        LocalKeyProvider.from_description(description).unwrap_key(wrapped, CTX)


def test_another_key_file_with_the_stored_description_fails(tmp_path: Path) -> None:
    writer = LocalKeyProvider(tmp_path / "a.key")
    wrapped = writer.wrap_key(generate_data_key(), CTX)
    other = LocalKeyProvider(tmp_path / "b.key")
    other.describe()
    with pytest.raises(veil.KeyUnwrapError):
        other.with_description(writer.describe()).unwrap_key(wrapped, CTX)


def test_file_url_forms(tmp_path: Path) -> None:
    absolute = provider_from_url(f"file://{tmp_path}/a%20b.key")
    assert isinstance(absolute, LocalKeyProvider)
    assert absolute.path == tmp_path / "a b.key"
    assert LocalKeyProvider.from_url(absolute.url).path == absolute.path
    with pytest.raises(veil.ProviderConfigError):
        provider_from_url("file://")


def test_description_holds_path_and_fingerprint_not_the_key(tmp_path: Path) -> None:
    path = tmp_path / "dev.key"
    provider = LocalKeyProvider(path)
    description = provider.describe()
    assert description["path"] == str(path)
    assert len(description["fingerprint"]) == 16
    assert path.read_text().strip() not in json.dumps(description)


# --- age ---------------------------------------------------------------------------


def test_age_identity_file_may_hold_comments_and_several_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ids.txt").write_text(f"# created: today\n# public key: {RCPT2}\n{ID2}\n\n{ID1}\n")
    monkeypatch.setenv("VEIL_AGE_IDENTITY", str(tmp_path / "ids.txt"))
    key = generate_data_key()
    wrapped = AgeProvider(RCPT1).wrap_key(key, CTX)
    assert AgeProvider(RCPT1).unwrap_key(wrapped, CTX) == key


def test_age_other_identity_with_the_stored_description_fails() -> None:
    writer = AgeProvider(RCPT1)
    wrapped = writer.wrap_key(generate_data_key(), CTX)
    other = AgeProvider(RCPT2, identities=[ID2])
    with pytest.raises(veil.KeyUnwrapError):
        other.with_description(writer.describe()).unwrap_key(wrapped, CTX)


def test_age_wraps_to_every_recipient() -> None:
    key = generate_data_key()
    wrapped = provider_from_url(f"age://{RCPT1},{RCPT2}").wrap_key(key, CTX)
    assert AgeProvider(RCPT1, identities=[ID1]).unwrap_key(wrapped, CTX) == key
    assert AgeProvider(RCPT1, identities=[ID2]).unwrap_key(wrapped, CTX) == key


def test_age_ssh_recipient(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    (tmp_path / "id_ed25519").write_bytes(pem)
    writer = provider_from_url("age://" + public.replace(" ", "%20"))
    key = generate_data_key()
    wrapped = writer.wrap_key(key, CTX)
    reader = AgeProvider(public, identity_file=tmp_path / "id_ed25519")
    assert reader.unwrap_key(wrapped, CTX) == key


def test_age_without_identity_says_to_set_the_variable() -> None:
    wrapped = AgeProvider(RCPT1).wrap_key(generate_data_key(), CTX)
    with pytest.raises(veil.ProviderConfigError, match="VEIL_AGE_IDENTITY"):
        AgeProvider(RCPT1).unwrap_key(wrapped, CTX)


def test_age_bad_recipient_is_refused() -> None:
    with pytest.raises(veil.ProviderConfigError, match="not an age recipient"):
        provider_from_url("age://age1notakey")
    with pytest.raises(veil.ProviderConfigError):
        provider_from_url("age://")


def test_age_bad_identity_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text(f"# ok\n{ID1}\nnonsense\n")
    provider = AgeProvider(RCPT1, identity_file=tmp_path / "ids.txt")
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    with pytest.raises(veil.ProviderConfigError, match="line 3") as info:
        provider.unwrap_key(wrapped, CTX)
    assert ID1 not in str(info.value)


def test_age_wrapped_key_is_a_plain_age_file_pyrage_decrypts() -> None:
    key = generate_data_key()
    wrapped = AgeProvider(RCPT1).wrap_key(key, CTX)
    assert wrapped.startswith(b"age-encryption.org/v1\n")
    payload = json.loads(pyrage.decrypt(wrapped, [pyrage.x25519.Identity.from_str(ID1)]))
    assert payload["ctx"] == CTX
    assert __import__("base64").b64decode(payload["k"]) == key


@pytest.mark.skipif(shutil.which("age") is None, reason="the age command is not installed")
def test_age_command_line_tool_decrypts_a_wrapped_key(tmp_path: Path) -> None:
    key = generate_data_key()
    (tmp_path / "wrapped.age").write_bytes(AgeProvider(RCPT1).wrap_key(key, CTX))
    (tmp_path / "id.txt").write_text(ID1 + "\n")
    done = subprocess.run(
        ["age", "--decrypt", "-i", str(tmp_path / "id.txt"), str(tmp_path / "wrapped.age")],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert __import__("base64").b64decode(json.loads(done.stdout)["k"]) == key


def test_age_without_pyrage_says_to_install_the_extra(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["pyrage"] = None  # as if the extra were not installed
        import veil
        from veil.providers import AgeProvider
        try:
            AgeProvider({RCPT1!r})
        except veil.ProviderConfigError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "pip install 'veil[age]'" in done.stdout, done.stderr


# --- registry ----------------------------------------------------------------------


def test_built_in_schemes_are_known() -> None:
    assert {"passphrase", "file", "age"} <= set(known_schemes())


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(veil.UnknownProviderError) as info:
        provider_from_url("nosuchkms://key")
    for scheme in ("passphrase://", "file://", "age://"):
        assert scheme in str(info.value)


def test_url_without_a_scheme_is_refused() -> None:
    with pytest.raises(veil.ProviderConfigError, match="scheme://"):
        provider_from_url("just-a-path.key")


def test_provider_from_description_rebuilds_a_provider(tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "k.key")
    rebuilt = provider_from_description("file", provider.describe())
    assert isinstance(rebuilt, LocalKeyProvider)
    assert rebuilt.path == provider.path


class _Rot(SecretsProvider):
    """Not a real protection: an XOR with the context, for registry tests only."""

    scheme = "rot-test"

    def wrap_key(self, data_key: bytes, context: Any) -> bytes:
        return data_key

    def unwrap_key(self, wrapped: bytes, context: Any) -> bytes:
        return wrapped

    def describe(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_description(cls, description: Any) -> _Rot:
        return cls()


def test_register_provider_as_a_decorator() -> None:
    assert register_provider(_Rot) is _Rot
    assert isinstance(provider_from_url("rot-test://"), _Rot)
    assert "rot-test" in known_schemes()


def test_registering_another_class_for_a_taken_scheme_is_refused() -> None:
    class Impostor(_Rot):
        scheme = "passphrase"

    with pytest.raises(veil.ProviderConfigError, match="replace=True"):
        register_provider(Impostor)
    assert type(provider_from_url("passphrase://")) is PassphraseProvider


def test_registering_a_class_without_a_scheme_is_refused() -> None:
    class NoScheme(_Rot):
        scheme = "Not A Scheme"

    with pytest.raises(veil.ProviderConfigError, match="scheme"):
        register_provider(NoScheme)


@pytest.fixture
def entry_point_dist(tmp_path: Path) -> Iterator[Path]:
    """A real installed distribution, in a folder on sys.path, declaring providers."""
    (tmp_path / "veil_ep_plugin.py").write_text(
        textwrap.dedent(
            """
            from veil.providers import SecretsProvider

            class PluginProvider(SecretsProvider):
                scheme = "plugintest"
                def wrap_key(self, data_key, context): return data_key[::-1]
                def unwrap_key(self, wrapped, context): return wrapped[::-1]
                def describe(self): return {}
                @classmethod
                def from_description(cls, description): return cls()

            class Hijack(PluginProvider):
                scheme = "passphrase"
            """
        )
    )
    info = tmp_path / "veil_ep_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: veil-ep-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[veil.secrets_providers]\n"
        "plugintest = veil_ep_plugin:PluginProvider\n"
        "passphrase = veil_ep_plugin:Hijack\n"
        "broken = veil_ep_plugin:DoesNotExist\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("veil_ep_plugin", None)


@pytest.mark.usefixtures("entry_point_dist")
def test_entry_point_provider_is_found_by_scheme() -> None:
    assert "plugintest" in known_schemes()
    provider = provider_from_url("plugintest://")
    assert type(provider).__name__ == "PluginProvider"
    assert provider.unwrap_key(provider.wrap_key(b"abc", CTX), CTX) == b"abc"


@pytest.mark.usefixtures("entry_point_dist")
def test_entry_point_cannot_replace_a_built_in_scheme() -> None:
    assert type(provider_from_url("passphrase://")) is PassphraseProvider


@pytest.mark.usefixtures("entry_point_dist")
def test_broken_entry_point_raises_provider_config_error() -> None:
    with pytest.raises(veil.ProviderConfigError, match="broken"):
        provider_from_url("broken://")


def test_age_provider_is_exposed_by_the_package() -> None:
    import veil.providers

    assert veil.providers.AgeProvider is AgeProvider
    assert "AgeProvider" in veil.providers.__all__
