"""Local providers against hostile input: stored KDF settings, key file paths that
lead elsewhere, exceptions that could carry secrets, pickling."""

from __future__ import annotations

import base64
import copy
import errno
import functools
import json
import os
import pickle
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import veil
from veil.crypto import ValueCipher, generate_data_key
from veil.providers import (
    AgeProvider,
    LocalKeyProvider,
    PassphraseProvider,
    SecretsProvider,
    context_bytes,
    provider_from_description,
    provider_from_url,
)
from veil.providers import base as base_module
from veil.providers import passphrase as passphrase_module
from veil.providers._envelope import KeyWrap
from veil.providers._kdf import KEYS, DerivationCache

CTX = {"stack": "dev"}
PASSPHRASE = "correct horse battery staple"
WEAK: dict[str, Any] = {"insecure_weak_kdf": True}
FAST: dict[str, Any] = {"memory_cost": 64, "iterations": 1, "lanes": 1}
VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "providers-v1.json").read_text(encoding="utf-8")
)


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "VEIL_PASSPHRASE",
        "VEIL_PASSPHRASE_FILE",
        "VEIL_AGE_IDENTITY",
        "VEIL_KEY_FILE",
        "VEIL_INSECURE_WEAK_KDF",
    ):
        monkeypatch.delenv(name, raising=False)


def stored(**settings: Any) -> dict[str, Any]:
    """A stored passphrase description as a weak test writer makes it, then edited."""
    writer = PassphraseProvider(PASSPHRASE, **FAST, **WEAK)
    writer.wrap_key(generate_data_key(), CTX)
    return {**writer.describe(), **settings}


# --- stored KDF settings: at most 4x the defaults, refused before any derivation ----------


HOSTILE = [
    ({"memory_cost": 1024 * 1024, "iterations": 8}, "memory_cost"),  # 1 GiB x 8 passes
    ({"memory_cost": 4 * 65536 + 1, "iterations": 1}, "262144 KiB"),
    ({"memory_cost": 2 * 65536, "iterations": 7}, "786432"),
    ({"memory_cost": 65536, "iterations": 13}, "786432"),
    ({"memory_cost": 19456, "iterations": 64}, "786432"),
    ({"memory_cost": 65536, "iterations": 3, "lanes": 17}, "lanes"),
    ({"kdf": "pbkdf2-sha256", "iterations": 4 * 600_000 + 1}, "2400000"),
    ({"kdf": "pbkdf2-sha256", "iterations": 10**12}, "2400000"),
]


def _pbkdf2(settings: dict[str, Any]) -> dict[str, Any]:
    if settings.get("kdf") == "pbkdf2-sha256":
        return {"memory_cost": None, "lanes": None, **settings}
    return settings


@pytest.mark.parametrize(("settings", "bound"), HOSTILE)
@pytest.mark.parametrize("how", ["from_description", "with_description", "registry", "weak"])
def test_stored_kdf_settings_above_four_times_the_defaults_are_refused_before_deriving(
    settings: dict[str, Any], bound: str, how: str
) -> None:
    description = {k: v for k, v in stored(**_pbkdf2(settings)).items() if v is not None}
    before = passphrase_module.derivation_count()
    started = time.monotonic()
    attempts: dict[str, Callable[[], object]] = {
        "from_description": lambda: PassphraseProvider.from_description(description),
        "with_description": lambda: PassphraseProvider(PASSPHRASE).with_description(description),
        "registry": lambda: provider_from_description("passphrase", description),
        # The opt-out lowers the minimums only: the cap stays.
        "weak": lambda: PassphraseProvider(PASSPHRASE, **WEAK).with_description(description),
    }
    with pytest.raises(veil.ProviderConfigError) as info:
        attempts[how]()
    assert time.monotonic() - started < 0.5
    assert passphrase_module.derivation_count() == before
    message = str(info.value)
    assert bound in message
    assert "bound" in message
    assert PASSPHRASE not in message


def test_the_defaults_times_four_are_accepted_without_deriving() -> None:
    pbkdf2 = stored(kdf="pbkdf2-sha256", iterations=2_400_000)
    del pbkdf2["memory_cost"], pbkdf2["lanes"]
    descriptions = [
        stored(memory_cost=4 * 65536, iterations=3, lanes=16),
        stored(memory_cost=65536, iterations=12),
        pbkdf2,
    ]
    before = passphrase_module.derivation_count()
    for description in descriptions:
        PassphraseProvider.from_description(description)
    assert passphrase_module.derivation_count() == before


# --- minimums: OWASP's Password Storage Cheat Sheet --------------------------------------


@pytest.mark.parametrize(
    ("memory_cost", "iterations"), [(47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5)]
)
def test_each_owasp_argon2id_configuration_is_accepted(memory_cost: int, iterations: int) -> None:
    before = passphrase_module.derivation_count()
    PassphraseProvider(PASSPHRASE, memory_cost=memory_cost, iterations=iterations, lanes=1)
    assert passphrase_module.derivation_count() == before  # checked, nothing derived
    url = f"passphrase://?memory_cost={memory_cost}&iterations={iterations}&lanes=1"
    assert isinstance(provider_from_url(url), PassphraseProvider)


@pytest.mark.parametrize(
    ("memory_cost", "iterations"),
    [(47103, 1), (19455, 2), (12288, 2), (7167, 100), (64, 1), (8, 1)],
)
def test_argon2id_below_owasp_minimums_is_refused_for_a_new_stack(
    memory_cost: int, iterations: int
) -> None:
    with pytest.raises(veil.ProviderConfigError, match="OWASP") as info:
        PassphraseProvider(PASSPHRASE, memory_cost=memory_cost, iterations=iterations, lanes=1)
    assert "insecure_weak_kdf=True" in str(info.value)
    url = f"passphrase://?memory_cost={memory_cost}&iterations={iterations}&lanes=1"
    with pytest.raises(veil.ProviderConfigError, match="OWASP"):
        provider_from_url(url)


@pytest.mark.parametrize("iterations", [1, 1000, 599_999])
def test_pbkdf2_below_600000_iterations_is_refused(iterations: int) -> None:
    with pytest.raises(veil.ProviderConfigError, match=r"iterations=.*600000"):
        provider_from_url(f"passphrase://?kdf=pbkdf2&iterations={iterations}")
    with pytest.raises(veil.ProviderConfigError, match="600000"):
        PassphraseProvider(PASSPHRASE, kdf="pbkdf2", iterations=iterations)


def test_stored_settings_below_the_minimum_are_refused_before_deriving() -> None:
    description = stored()
    before = passphrase_module.derivation_count()
    attempts: list[Callable[[], object]] = [
        lambda: PassphraseProvider.from_description(description),
        lambda: PassphraseProvider(PASSPHRASE).with_description(description),
        lambda: provider_from_description("passphrase", description),
    ]
    for attempt in attempts:
        with pytest.raises(veil.ProviderConfigError, match="OWASP"):
            attempt()
    assert passphrase_module.derivation_count() == before


def test_a_stored_description_cannot_opt_out_of_the_minimums() -> None:
    for key in ("insecure_weak_kdf", "VEIL_INSECURE_WEAK_KDF"):
        with pytest.raises(veil.ProviderConfigError, match="OWASP"):
            PassphraseProvider.from_description(stored(**{key: True}))
        with pytest.raises(veil.ProviderConfigError, match="unknown passphrase:// setting"):
            provider_from_url(f"passphrase://?memory_cost=64&iterations=1&lanes=1&{key}=1")


def test_opt_out_by_keyword_everywhere_a_provider_is_built() -> None:
    description = stored()
    key = generate_data_key()
    writer = PassphraseProvider(PASSPHRASE, **FAST, **WEAK)
    wrapped = writer.wrap_key(key, CTX)
    description = writer.describe()
    readers = [
        PassphraseProvider(PASSPHRASE, **WEAK).with_description(description),
        PassphraseProvider.from_description(description, **WEAK),
        provider_from_description("passphrase", description, **WEAK),
    ]
    for reader in readers:
        reader.with_description(description)  # the opt-out goes with the instance
    assert PassphraseProvider.from_url("passphrase://?memory_cost=64&lanes=1", **WEAK)
    assert provider_from_url("passphrase://?kdf=pbkdf2&iterations=1", **WEAK)
    assert readers[0].unwrap_key(wrapped, CTX) == key


def test_opt_out_by_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    description = stored()
    for value in ("0", "true", "yes", ""):
        monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", value)
        with pytest.raises(veil.ProviderConfigError, match="OWASP"):
            PassphraseProvider.from_description(description)
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")
    PassphraseProvider.from_description(description)
    provider_from_url("passphrase://?kdf=pbkdf2&iterations=1")
    with pytest.raises(veil.ProviderConfigError, match="786432"):
        PassphraseProvider.from_description(stored(memory_cost=65536, iterations=13))


def test_opt_out_changes_neither_repr_nor_description() -> None:
    weak = PassphraseProvider(PASSPHRASE, **FAST, **WEAK)
    assert repr(weak) == "PassphraseProvider(kdf='argon2id', memory_cost=64, iterations=1, lanes=1)"
    assert set(weak.describe()) == {
        "version",
        "kdf",
        "memory_cost",
        "iterations",
        "lanes",
        "salt",
        "verifier",
    }
    assert "insecure" not in json.dumps(weak.describe()).lower()
    strong = PassphraseProvider(PASSPHRASE)
    strong_weak_ok = PassphraseProvider(PASSPHRASE, **WEAK)
    assert repr(strong) == repr(strong_weak_ok)
    assert strong.url == strong_weak_ok.url == "passphrase://"


def test_the_opt_out_is_not_set_for_the_whole_test_suite() -> None:
    assert "VEIL_INSECURE_WEAK_KDF" not in os.environ


def test_opt_out_in_a_subprocess_needs_the_environment_variable(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import veil
        from veil.providers import provider_from_url
        try:
            provider_from_url("passphrase://?memory_cost=64&iterations=1&lanes=1")
            print("BUILT")
        except veil.ProviderConfigError as exc:
            print("REFUSED", exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    runs = {}
    for flag in (None, "1"):
        if flag is not None:
            env["VEIL_INSECURE_WEAK_KDF"] = flag
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        runs[flag] = done.stdout
    assert runs[None].startswith("REFUSED"), runs
    assert "OWASP" in runs[None]
    assert runs["1"].startswith("BUILT"), runs


def test_stored_vectors_with_weak_settings_need_the_opt_out() -> None:
    for vector in VECTORS["wrapped"]:
        if vector["scheme"] == "passphrase":
            with pytest.raises(veil.ProviderConfigError, match="OWASP"):
                PassphraseProvider(VECTORS["passphrase"]).with_description(vector["description"])


# --- one derivation cache ----------------------------------------------------------------


def test_two_different_derivations_run_side_by_side() -> None:
    cache = DerivationCache()
    both_inside = threading.Barrier(2, timeout=5)
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def derive(name: str) -> None:
        def run() -> bytes:
            both_inside.wait()  # breaks if the other derivation is held off
            return name.encode()

        try:
            results[name] = cache.derive(name.encode(), b"salt", ("kdf",), run)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=derive, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert results == {"a": b"a", "b": b"b"}
    assert cache.derivations == 2


def test_the_same_derivation_asked_by_many_threads_runs_once() -> None:
    cache = DerivationCache()
    calls: list[int] = []
    start = threading.Event()

    def run() -> bytes:
        calls.append(1)
        time.sleep(0.05)
        return b"k" * 32

    results: list[bytes] = []

    def ask() -> None:
        start.wait()
        results.append(cache.derive(b"pw", b"salt", ("argon2id", 1), run))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert results == [b"k" * 32] * 8
    assert cache.derivations == 1


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = DerivationCache(maxsize=2)
    calls: list[bytes] = []

    def get(pw: bytes) -> bytes:
        return cache.derive(pw, b"s", (), lambda: calls.append(pw) or pw)  # type: ignore[func-returns-value]

    get(b"a"), get(b"b"), get(b"a"), get(b"c")  # "b" is the least recently used
    assert calls == [b"a", b"b", b"c"]
    get(b"a")
    assert calls == [b"a", b"b", b"c"]
    get(b"b")
    assert calls == [b"a", b"b", b"c", b"b"]


def test_the_cache_keys_salt_and_settings_apart_and_holds_no_passphrase() -> None:
    cache = DerivationCache()
    n = 0

    def run() -> bytes:
        nonlocal n
        n += 1
        return bytes([n]) * 32

    secret = b"a very secret passphrase"
    first = cache.derive(secret, b"salt-1", ("argon2id", 64), run)
    assert cache.derive(secret, b"salt-2", ("argon2id", 64), run) != first
    assert cache.derive(secret, b"salt-1", ("argon2id", 128), run) != first
    assert cache.derive(secret, b"salt-1", ("argon2id", 64), run) == first
    assert n == 3
    held = repr(list(cache._entries)) + repr(list(cache._entries.values()))
    assert repr(secret)[2:-1] not in held
    assert secret.hex() not in held


def test_a_failed_derivation_caches_nothing() -> None:
    cache = DerivationCache()

    def fail() -> bytes:
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError):
        cache.derive(b"pw", b"s", (), fail)
    assert cache.derive(b"pw", b"s", (), lambda: b"k") == b"k"
    assert cache.derivations == 1


def test_passphrase_derivations_go_through_the_one_cache() -> None:
    before = KEYS.derivations
    PassphraseProvider(PASSPHRASE, **FAST, **WEAK).wrap_key(generate_data_key(), CTX)
    assert KEYS.derivations == before + 1 == passphrase_module.derivation_count()


def test_cache_helpers_are_not_public_names() -> None:
    assert "derivation_count" not in passphrase_module.__all__
    assert "clear_cache" not in passphrase_module.__all__
    assert not hasattr(base_module, "context_digest")


# --- one key-wrap envelope, byte-compatible -----------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["wrapped"], ids=lambda v: v["wrapped_hex"][:12])
def test_wrapped_keys_of_earlier_versions_still_open(
    vector: dict[str, Any], tmp_path: Path
) -> None:
    wrapped = bytes.fromhex(vector["wrapped_hex"])
    context = VECTORS["context"]
    if vector["scheme"] == "passphrase":
        opener: SecretsProvider = PassphraseProvider(
            VECTORS["passphrase"], **WEAK
        ).with_description(vector["description"])
    else:
        path = tmp_path / "k.key"
        path.write_text(VECTORS["key_file_base64"] + "\n")
        path.chmod(0o600)
        opener = LocalKeyProvider(path).with_description(vector["description"])
    assert opener.unwrap_key(wrapped, context).hex() == VECTORS["data_key_hex"]
    with pytest.raises(veil.KeyUnwrapError):
        opener.unwrap_key(wrapped, {**context, "stack": "prod"})


def test_file_envelope_matches_an_independent_implementation(tmp_path: Path) -> None:
    raw = os.urandom(32)
    path = tmp_path / "k.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, base64.b64encode(raw) + b"\n")
    os.close(fd)
    kek = HKDF(hashes.SHA256(), 32, None, b"veil/file/v1/wrap-key").derive(raw)
    aad = b"veil/file/v1/wrap\x00" + context_bytes(CTX)
    key = generate_data_key()
    provider = LocalKeyProvider(path)
    wrapped = provider.wrap_key(key, CTX)
    assert wrapped[0] == 1
    assert AESGCM(kek).decrypt(wrapped[1:13], wrapped[13:], aad) == key
    nonce = os.urandom(12)
    mine = b"\x01" + nonce + AESGCM(kek).encrypt(nonce, key, aad)
    assert provider.unwrap_key(mine, CTX) == key


def test_the_envelope_binds_its_label_and_context() -> None:
    key = os.urandom(32)
    one = KeyWrap(key, label=b"one\x00", what="one", failure="does not open")
    two = KeyWrap(key, label=b"two\x00", what="two", failure="does not open")
    data_key = generate_data_key()
    wrapped = one.wrap(data_key, CTX)
    assert one.unwrap(wrapped, CTX) == data_key
    with pytest.raises(veil.KeyUnwrapError, match="does not open"):
        two.unwrap(wrapped, CTX)
    with pytest.raises(veil.KeyUnwrapError):
        one.unwrap(wrapped, {"stack": "prod"})
    for bad in (b"", b"\x02" + wrapped[1:], wrapped[:28]):
        with pytest.raises(veil.KeyUnwrapError, match="truncated or not from one"):
            one.unwrap(bad, CTX)


# --- key files ------------------------------------------------------------------------------


def write_key(path: Path, mode: int = 0o600) -> bytes:
    raw = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, base64.b64encode(raw) + b"\n")
    os.close(fd)
    os.chmod(path, mode)
    return raw


def test_a_key_file_behind_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    write_key(tmp_path / "real.key")
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    with pytest.raises(veil.ProviderConfigError, match="symbolic link"):
        LocalKeyProvider(tmp_path / "link.key").wrap_key(generate_data_key(), CTX)
    # Unwrapping, and creating: a dangling link is not replaced by a new key file.
    (tmp_path / "dangling.key").symlink_to(tmp_path / "nowhere.key")
    with pytest.raises(veil.ProviderConfigError, match="symbolic link"):
        LocalKeyProvider(tmp_path / "dangling.key").wrap_key(generate_data_key(), CTX)
    assert not (tmp_path / "nowhere.key").exists()


def _fails_within(seconds: float, action: Callable[[], object]) -> BaseException:
    """Run ``action`` in a daemon thread; return what it raised, failing if it blocks."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "opening the key file blocked"
    assert outcome, "no error was raised"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_fifo_key_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "dev.key"
    os.mkfifo(fifo, 0o600)
    for provider in (
        LocalKeyProvider(fifo),
        LocalKeyProvider.from_description({"path": str(fifo)}),
    ):
        error = _fails_within(5, functools.partial(provider.unwrap_key, b"\x01" * 40, CTX))
        assert isinstance(error, veil.ProviderConfigError)
        assert "not a regular file" in str(error)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to about 100 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="veil") as folder:
        yield Path(folder)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_socket_key_file_is_refused(short_dir: Path) -> None:
    path = short_dir / "k.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        os.chmod(path, 0o600)
        error = _fails_within(5, lambda: LocalKeyProvider(path).wrap_key(generate_data_key(), CTX))
    finally:
        server.close()
    assert isinstance(error, veil.ProviderConfigError)
    assert "not a regular file" in str(error)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero", "/dev/tty"])
def test_a_device_key_file_is_refused_without_blocking_and_without_its_mode(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    error = _fails_within(
        5, lambda: LocalKeyProvider.from_description({"path": device}).unwrap_key(b"x" * 40, CTX)
    )
    assert isinstance(error, veil.ProviderConfigError)
    message = str(error)
    assert f"the key file {device} " in message
    assert oct(stat.S_IMODE(os.stat(device).st_mode))[2:] not in message
    assert "character" not in message
    assert "device" not in message


def test_a_folder_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dev.key").mkdir(mode=0o700)
    with pytest.raises(veil.ProviderConfigError, match="not a regular file"):
        LocalKeyProvider.from_description({"path": str(tmp_path / "dev.key")}).unwrap_key(
            b"x" * 40, CTX
        )


@pytest.mark.parametrize(
    "content",
    [b"", b"x" * 31, b"x" * 33, b"A" * 47, b"A" * 4096, os.urandom(1 << 20)],
    ids=["empty", "31", "33", "47", "4096", "1MiB"],
)
def test_a_key_file_of_another_size_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "dev.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(veil.ProviderConfigError, match="does not hold a 32-byte key"):
        LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_base64_key_file_may_end_its_line(tmp_path: Path, ending: bytes) -> None:
    path = tmp_path / "dev.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, base64.b64encode(os.urandom(32)) + ending)
    os.close(fd)
    key = generate_data_key()
    assert LocalKeyProvider(path).unwrap_key(LocalKeyProvider(path).wrap_key(key, CTX), CTX) == key


def test_a_stored_path_to_another_file_reveals_nothing_about_it(tmp_path: Path) -> None:
    other = tmp_path / "someone-elses.txt"
    other.write_bytes(b"x" * 45)
    other.chmod(0o644)
    with pytest.raises(veil.KeyFilePermissionError) as info:
        LocalKeyProvider.from_description({"path": str(other)}).unwrap_key(b"x" * 40, CTX)
    message = str(info.value)
    assert message.count(str(other)) >= 1
    outside_path = message.replace(str(other), "<path>")  # a temp path may hold digits
    assert "644" not in outside_path
    assert "0o" not in outside_path
    other.chmod(0o600)
    with pytest.raises(veil.ProviderConfigError) as info2:
        LocalKeyProvider.from_description({"path": str(other)}).unwrap_key(b"x" * 40, CTX)
    assert "45" not in str(info2.value).replace(str(other), "<path>")  # not its size


def test_the_permission_check_uses_the_open_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dev.key"
    write_key(path)

    def no_path_lookups(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the key file was looked up by path a second time")

    for name in ("stat", "lstat", "access"):
        monkeypatch.setattr(os, name, no_path_lookups)
    monkeypatch.setattr(os.path, "exists", no_path_lookups)
    monkeypatch.setattr(os.path, "isfile", no_path_lookups)
    key = generate_data_key()
    provider = LocalKeyProvider(path, create=False)
    assert provider.unwrap_key(provider.wrap_key(key, CTX), CTX) == key


def test_a_tilde_path_is_stored_as_written_and_expanded_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    provider = provider_from_url("file://~/keys/dev.key")
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CTX)
    description = provider.describe()
    assert description["path"] == "~/keys/dev.key"
    assert provider.url == "file://~/keys/dev.key"
    assert (tmp_path / "keys" / "dev.key").is_file()
    elsewhere = tmp_path / "other-home"
    elsewhere.mkdir()
    (elsewhere / "keys").mkdir()
    os.link(tmp_path / "keys" / "dev.key", elsewhere / "keys" / "dev.key")
    monkeypatch.setenv("HOME", str(elsewhere))
    assert LocalKeyProvider.from_description(description).unwrap_key(wrapped, CTX) == key


def test_a_relative_path_is_relative_to_the_base_dir_or_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    somewhere = tmp_path / "somewhere"
    somewhere.mkdir()
    monkeypatch.chdir(somewhere)
    writer = provider_from_url("file://keys/dev.key", base_dir=project)
    key = generate_data_key()
    wrapped = writer.wrap_key(key, CTX)
    description = writer.describe()
    assert description["path"] == "keys/dev.key"
    assert (project / "keys" / "dev.key").is_file()
    assert not (somewhere / "keys").exists()
    for reader in (
        LocalKeyProvider.from_description(description, base_dir=project),
        provider_from_description("file", description, base_dir=project),
    ):
        assert reader.unwrap_key(wrapped, CTX) == key
    # Without a base_dir: the current folder, and the error names only the path as given.
    with pytest.raises(veil.ProviderConfigError, match="does not exist") as info:
        LocalKeyProvider.from_description(description).unwrap_key(wrapped, CTX)
    assert "the key file keys/dev.key does not exist" in str(info.value)
    assert str(somewhere) not in str(info.value)
    monkeypatch.chdir(project)
    assert LocalKeyProvider.from_description(description).unwrap_key(wrapped, CTX) == key


def test_veil_key_file_overrides_the_stored_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = LocalKeyProvider(tmp_path / "dev.key")
    key = generate_data_key()
    wrapped = writer.wrap_key(key, CTX)
    description = {**writer.describe(), "path": "/nowhere/at/all.key"}
    with pytest.raises(veil.ProviderConfigError, match="does not exist"):
        LocalKeyProvider.from_description(description).unwrap_key(wrapped, CTX)
    monkeypatch.setenv("VEIL_KEY_FILE", str(tmp_path / "dev.key"))
    reader = LocalKeyProvider.from_description(description)
    assert reader.unwrap_key(wrapped, CTX) == key
    assert reader.describe()["path"] == "/nowhere/at/all.key"  # the stored path is kept
    monkeypatch.setenv("VEIL_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(veil.ProviderConfigError, match="named by VEIL_KEY_FILE"):
        LocalKeyProvider.from_description(description).unwrap_key(wrapped, CTX)


def test_veil_key_file_is_refused_as_a_fifo_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs named pipes (POSIX)")
    os.mkfifo(tmp_path / "pipe", 0o600)
    monkeypatch.setenv("VEIL_KEY_FILE", str(tmp_path / "pipe"))
    provider = LocalKeyProvider.from_description({"path": "dev.key"})
    error = _fails_within(5, lambda: provider.unwrap_key(b"x" * 40, CTX))
    assert "not a regular file" in str(error)


def test_a_path_that_cannot_be_opened_says_why_about_that_path_only(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(veil.ProviderConfigError) as info:
        LocalKeyProvider.from_description({"path": str(blocker / "dev.key")}).unwrap_key(
            b"x" * 40, CTX
        )
    assert os.strerror(errno.ENOTDIR) in str(info.value)
    assert str(blocker / "dev.key") in str(info.value)


# --- no secret in any exception object --------------------------------------------------


def _holds(exc: BaseException | None, needle: bytes, seen: set[int] | None = None) -> bool:
    """Whether ``exc``, its args, attributes, __cause__ or __context__ hold ``needle``."""
    seen = set() if seen is None else seen
    if exc is None or id(exc) in seen:
        return False
    seen.add(id(exc))
    text = needle.decode("utf-8", "replace")
    values: list[Any] = [*exc.args, str(exc), repr(exc)]
    values += [getattr(exc, name, None) for name in ("object", "doc", "filename", "filename2")]
    values += list(vars(exc).values())
    for value in values:
        if isinstance(value, (bytes, bytearray)) and needle in value:
            return True
        if isinstance(value, str) and (text in value or needle.hex() in value):
            return True
    return _holds(exc.__cause__, needle, seen) or _holds(exc.__context__, needle, seen)


def test_a_non_utf8_passphrase_file_leaves_no_passphrase_in_the_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = b"my-secret-passphrase-\xff\xfe-tail"
    (tmp_path / "pw").write_bytes(secret)
    monkeypatch.setenv("VEIL_PASSPHRASE_FILE", str(tmp_path / "pw"))
    with pytest.raises(veil.ProviderConfigError, match="not UTF-8") as info:
        PassphraseProvider(**FAST, **WEAK).wrap_key(generate_data_key(), CTX)
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    assert not _holds(info.value, b"my-secret-passphrase")


def test_a_passphrase_that_is_not_valid_text_leaves_nothing_in_the_exception() -> None:
    with pytest.raises(veil.ProviderConfigError, match="not valid text") as info:
        PassphraseProvider("secret-\ud800-passphrase", **FAST, **WEAK)
    assert info.value.__context__ is None
    assert not _holds(info.value, b"secret-")


def test_a_non_utf8_age_identity_file_leaves_no_key_in_the_exception(tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    secret = str(identity).encode()
    (tmp_path / "id.txt").write_bytes(secret + b"\n\xff\n")
    provider = AgeProvider(str(identity.to_public()), identity_file=tmp_path / "id.txt")
    wrapped = AgeProvider(str(identity.to_public()), identities=[str(identity)]).wrap_key(
        generate_data_key(), CTX
    )
    with pytest.raises(veil.ProviderConfigError, match="not UTF-8") as info:
        provider.unwrap_key(wrapped, CTX)
    assert info.value.__context__ is None
    assert not _holds(info.value, secret)


def test_a_damaged_age_identity_leaves_no_key_in_the_exception(tmp_path: Path) -> None:
    secret = str(pyrage.x25519.Identity.generate())
    damaged = secret[:-8] + "QQQQQQQQ"
    with pytest.raises(veil.ProviderConfigError, match="line 1") as info:
        AgeProvider(str(pyrage.x25519.Identity.generate().to_public()), identities=[damaged])
    assert info.value.__context__ is None
    assert not _holds(info.value, damaged[16:40].encode())


def test_an_age_payload_that_is_not_a_wrapped_key_leaves_nothing_in_the_exception() -> None:
    identity = pyrage.x25519.Identity.generate()
    payload = b'{"v": 1, "k": "not-base64-' + b"s3cr3t" * 4 + b'"'
    wrapped = bytes(pyrage.encrypt(payload, [identity.to_public()]))
    provider = AgeProvider(str(identity.to_public()), identities=[str(identity)])
    with pytest.raises(veil.KeyUnwrapError) as info:
        provider.unwrap_key(wrapped, CTX)
    assert not _holds(info.value, b"s3cr3t" * 4)


def test_a_key_file_error_leaves_no_key_in_the_exception(tmp_path: Path) -> None:
    path = tmp_path / "dev.key"
    secret = b"k" * 43 + b"!"  # 44 characters, not base64
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, secret)
    os.close(fd)
    with pytest.raises(veil.ProviderConfigError) as info:
        LocalKeyProvider(path).wrap_key(generate_data_key(), CTX)
    assert info.value.__context__ is None
    assert not _holds(info.value, secret)


# --- pickling refused, copying harmless ---------------------------------------------------


def _providers(tmp_path: Path) -> list[SecretsProvider]:
    passphrase = PassphraseProvider(PASSPHRASE, **FAST, **WEAK)
    passphrase.wrap_key(generate_data_key(), CTX)  # holds derived keys now
    local = LocalKeyProvider(tmp_path / "dev.key")
    local.wrap_key(generate_data_key(), CTX)  # holds the key now
    identity = pyrage.x25519.Identity.generate()
    age = AgeProvider(str(identity.to_public()), identities=[str(identity)])

    class Mine(SecretsProvider):
        scheme = "mine"

        def __init__(self) -> None:
            self.key = os.urandom(32)

        def wrap_key(self, data_key: bytes, context: Any) -> bytes:
            return data_key

        def unwrap_key(self, wrapped: bytes, context: Any) -> bytes:
            return wrapped

        def describe(self) -> dict[str, Any]:
            return {}

        @classmethod
        def from_description(cls, description: Any) -> Mine:
            return cls()

    return [passphrase, local, age, Mine()]


@pytest.mark.parametrize("protocol", [None, *range(pickle.HIGHEST_PROTOCOL + 1)])
def test_providers_refuse_pickling(tmp_path: Path, protocol: int | None) -> None:
    for provider in _providers(tmp_path):
        with pytest.raises(veil.SecretPickleError):
            pickle.dumps(provider, protocol=protocol)  # None: the default protocol


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_objects_holding_key_material_refuse_pickling(protocol: int) -> None:
    for holder in (
        ValueCipher(generate_data_key()),
        KeyWrap(os.urandom(32), label=b"x", what="x", failure="x"),
        DerivationCache(),
    ):
        with pytest.raises(veil.SecretPickleError):
            pickle.dumps(holder, protocol=protocol)


def test_copies_of_providers_work_and_show_nothing(tmp_path: Path) -> None:
    for provider in _providers(tmp_path):
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CTX)
        for clone in (copy.copy(provider), copy.deepcopy(provider)):
            assert type(clone) is type(provider)
            assert repr(clone) == repr(provider)
            assert clone.unwrap_key(wrapped, CTX) == key
            with pytest.raises(veil.SecretPickleError):
                pickle.dumps(clone)
    assert PASSPHRASE not in repr(copy.deepcopy(_providers(tmp_path)[0]))
