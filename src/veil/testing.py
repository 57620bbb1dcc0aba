"""Compliance suites that every secrets provider and every state store must pass,
built-in or your own.

Providers: subclass :class:`ProviderComplianceSuite` in a test module (the class name
must start with ``Test`` for pytest to collect it) and define two fixtures::

    import pytest
    from veil.testing import ProviderComplianceSuite

    class TestMyProvider(ProviderComplianceSuite):
        @pytest.fixture
        def provider(self):
            return MyProvider(key=b"k" * 32)

        @pytest.fixture
        def other_provider(self):  # same kind, another key
            return MyProvider(key=b"o" * 32)

Optionally override ``restore``: a fixture returning a function that rebuilds a provider
from a stored description as a fresh process would (for example after setting the
environment variable your provider reads its credentials from). The default calls
``type(provider).from_description``.

State stores: subclass :class:`StateStoreComplianceSuite` and define one fixture::

    import pytest
    from veil.testing import StateStoreComplianceSuite

    class TestMyStore(StateStoreComplianceSuite):
        @pytest.fixture
        def store(self):
            return MyStore.from_url("mystore://test-bucket/" + unique_prefix())

``store`` is a fresh, empty store. Optional fixtures (defaults in brackets):

- ``store_factory``: a function returning another, independent store object on the
  same backend and location as ``store``, as a second process would build it
  [``store_from_url(store.url)``]. The multi-writer tests use it.
- ``history_store_factory``: a function ``n -> store`` on the same backend and location
  that keeps ``n`` versions [``store.url`` with ``history=n`` in its query].
- ``subprocess_prelude``: Python source run first in the child processes of the
  two-writer and kill tests, before ``store_from_url(store.url)`` [empty]. Put the
  ``register_store_scheme`` call of a store that is not an entry point here. The
  children inherit this process's environment.

Class attributes: ``takes_over_stale_locks`` (True only for stores that take over the
lock of a dead process on their own, as :class:`~veil.state.FileStore` does on one
host; remote stores leave that to ``break_lock``), ``kill_trials`` (30),
``concurrent_saves`` (25 per process).

The two-writer test runs two child processes; the kill test runs one child that
imports once and forks a writer per trial (POSIX only), killing each with ``SIGKILL``
a random moment into its writes. A scan of raw storage for plaintext is left to each
store's own tests: only they can list every object, row or blob written.

This module imports pytest; it is meant for test code only (``pip install 'veil[test]'``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from .crypto import generate_data_key
from .errors import (
    InvalidStackNameError,
    KeyUnwrapError,
    StackNotFoundError,
    StateError,
    StateLockedError,
    VeilError,
)
from .providers.base import SecretsProvider
from .state.store import StateStore, store_from_url

__all__ = ["ProviderComplianceSuite", "Restore", "StateStoreComplianceSuite", "StoreFactory"]

Restore = Callable[[Mapping[str, Any]], SecretsProvider]
"""Rebuild a provider from a stored description, as a new process would."""

CONTEXT: Mapping[str, str] = {"stack": "dev"}


def _through_json(description: Mapping[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(description))
    return loaded


def _corruptions(wrapped: bytes) -> list[tuple[str, bytes]]:
    cases = [(f"bit 0 of byte {i} flipped", _flip(wrapped, i, 0x01)) for i in range(len(wrapped))]
    cases += [(f"byte {i} inverted", _flip(wrapped, i, 0xFF)) for i in range(len(wrapped))]
    for n in sorted({0, 1, len(wrapped) // 2, len(wrapped) - 1}):
        cases.append((f"truncated to {n} bytes", wrapped[:n]))
    cases.append(("one byte appended", wrapped + b"\x00"))
    return cases


def _flip(data: bytes, index: int, mask: int) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


class ProviderComplianceSuite:
    """The checks every :class:`~veil.providers.SecretsProvider` must pass.

    Fixtures to define: ``provider`` and ``other_provider`` (same kind, different key;
    both ready to use, e.g. with their key files or credentials in place).
    Optional: ``restore`` (see the module docstring).
    """

    @pytest.fixture
    def restore(self, provider: SecretsProvider) -> Restore:
        """Default: ``type(provider).from_description``."""
        return type(provider).from_description

    # --- shape ----------------------------------------------------------------------

    def test_is_a_secrets_provider_with_a_scheme(self, provider: SecretsProvider) -> None:
        assert isinstance(provider, SecretsProvider)
        assert isinstance(type(provider).scheme, str)
        assert type(provider).scheme

    def test_url_names_the_scheme_and_builds_the_same_kind(self, provider: SecretsProvider) -> None:
        assert provider.url.startswith(type(provider).scheme + "://")
        assert isinstance(type(provider).from_url(provider.url), type(provider))

    # --- round trips ----------------------------------------------------------------

    def test_round_trip(self, provider: SecretsProvider) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        assert isinstance(wrapped, bytes)
        assert provider.unwrap_key(wrapped, CONTEXT) == key

    def test_wrapped_key_does_not_hold_the_data_key_in_the_clear(
        self, provider: SecretsProvider
    ) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        assert key not in wrapped
        assert key.hex().encode() not in wrapped.lower()

    def test_context_order_does_not_matter(self, provider: SecretsProvider) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, {"stack": "dev", "project": "web"})
        assert provider.unwrap_key(wrapped, {"project": "web", "stack": "dev"}) == key

    def test_description_survives_json_into_a_fresh_instance(
        self, provider: SecretsProvider, restore: Restore
    ) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        description = _through_json(provider.describe())
        fresh = restore(description)
        assert fresh is not provider
        assert type(fresh) is type(provider)
        assert fresh.unwrap_key(wrapped, CONTEXT) == key

    def test_with_description_keeps_credentials_and_unwraps(
        self, provider: SecretsProvider
    ) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        again = provider.with_description(_through_json(provider.describe()))
        assert isinstance(again, SecretsProvider)
        assert again.unwrap_key(wrapped, CONTEXT) == key

    def test_describe_is_json_and_stable(self, provider: SecretsProvider) -> None:
        provider.wrap_key(generate_data_key(), CONTEXT)
        first = provider.describe()
        assert _through_json(first) == first
        assert provider.describe() == first

    # --- failing closed -------------------------------------------------------------

    def test_wrong_context_fails(self, provider: SecretsProvider) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        with pytest.raises(KeyUnwrapError):
            provider.unwrap_key(wrapped, {"stack": "prod"})

    def test_extra_context_entry_fails(self, provider: SecretsProvider) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        with pytest.raises(KeyUnwrapError):
            provider.unwrap_key(wrapped, {**CONTEXT, "project": "web"})

    def test_other_key_fails(
        self, provider: SecretsProvider, other_provider: SecretsProvider
    ) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        with pytest.raises(KeyUnwrapError):
            other_provider.unwrap_key(wrapped, CONTEXT)

    def test_corrupted_wrapped_key_fails_every_way(self, provider: SecretsProvider) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        accepted = []
        for name, bad in _corruptions(wrapped):
            try:
                provider.unwrap_key(bad, CONTEXT)
            except KeyUnwrapError:
                continue
            except VeilError as exc:
                accepted.append(f"{name}: {type(exc).__name__} is not a KeyUnwrapError")
                continue
            accepted.append(f"{name}: unwrapped without error")
        assert not accepted, "; ".join(accepted[:5])

    def test_empty_wrapped_key_fails(self, provider: SecretsProvider) -> None:
        provider.wrap_key(generate_data_key(), CONTEXT)  # a provider in use
        with pytest.raises(KeyUnwrapError):
            provider.unwrap_key(b"", CONTEXT)

    def test_repr_does_not_show_a_wrapped_or_data_key(self, provider: SecretsProvider) -> None:
        key = generate_data_key()
        provider.wrap_key(key, CONTEXT)
        assert key.hex() not in repr(provider)


# --- state stores ------------------------------------------------------------------------

StoreFactory = Callable[[], StateStore]
"""Another store object on the same backend and location, as a second process builds it."""

_INVALID_NAMES = ["", "../x", "..", "a/b", "a\\b", ".hidden", "-x", "a b", "a\x00b", "x" * 101]


def _with_history(url: str, n: int) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "history"]
    query.append(("history", str(n)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _payload(n: int, size: int) -> bytes:
    """A body that tells its own writer apart and shows any mix of two writes."""
    block = b"%08d" % n
    return block * (size // len(block))


def _is_payload(data: bytes, size: int) -> bool:
    return len(data) == size - size % 8 and data == data[:8] * (len(data) // 8)


def _reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


_INCREMENT = """
import random, sys, time
from veil.errors import StateLockedError
from veil.state import store_from_url
store = store_from_url(sys.argv[1])
stack, wanted = sys.argv[2], int(sys.argv[3])
done = refused = 0
while done < wanted:
    try:
        with store.lock(stack, owner="increment"):
            n = int(store.read(stack))
            store.write(stack, b"%d" % (n + 1))
        done += 1
    except StateLockedError:
        refused += 1
        time.sleep(random.uniform(0.001, 0.01))
print(done, refused, flush=True)
"""

# Imports once, then forks one writer per trial: a trial costs a fork, not a start-up.
_WRITER_FORKS = """
import os, sys, traceback
from veil.errors import StateLockedError
from veil.state import store_from_url
url, stack, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
store_from_url(url).exists(stack)  # modules and caches warm; this object is not reused
print("forking", flush=True)
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "fork":
        pid = os.fork()
        if pid:
            continue
        try:
            store = store_from_url(url)  # its own connections, none shared with the parent
            store.exists(stack)
            first = int(arg)
            bodies = [(b"%08d" % n) * (size // 8) for n in range(first, first + 200)]
            os.write(1, b"ready %d\\n" % os.getpid())
            for body in bodies:
                try:
                    store.write(stack, body)
                except StateLockedError:
                    pass
        except BaseException:
            traceback.print_exc()
            os.write(1, b"failed\\n")
        finally:
            os._exit(0)
    elif command == "reap":
        os.waitpid(int(arg), 0)
        print("reaped", flush=True)
"""


class StateStoreComplianceSuite:
    """The checks every :class:`~veil.state.StateStore` must pass.

    Fixture to define: ``store`` (a fresh, empty store). Optional: ``store_factory``,
    ``history_store_factory``, ``subprocess_prelude`` (see the module docstring).
    """

    takes_over_stale_locks: bool = False
    kill_trials: int = 30
    concurrent_saves: int = 25
    payload_size: int = 64 * 1024

    @pytest.fixture
    def store_factory(self, store: StateStore) -> StoreFactory:
        """Default: ``store_from_url(store.url)``."""
        return lambda: store_from_url(store.url)

    @pytest.fixture
    def history_store_factory(self, store: StateStore) -> Callable[[int], StateStore]:
        """Default: ``store.url`` with ``history=n`` in its query."""
        return lambda n: store_from_url(_with_history(store.url, n))

    @pytest.fixture
    def subprocess_prelude(self) -> str:
        """Default: nothing to run before ``store_from_url`` in a child process."""
        return ""

    def _spawn(self, prelude: str, code: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", prelude + "\n" + code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )

    # --- shape and URL ----------------------------------------------------------------

    def test_is_a_state_store(self, store: StateStore) -> None:
        assert isinstance(store, StateStore)

    def test_url_builds_a_store_on_the_same_data(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        assert isinstance(store.url, str)
        store.write("dev", b"seen from the other")
        again = store_from_url(store.url)
        assert type(again) is type(store)
        assert again.read("dev") == b"seen from the other"
        assert store_factory().read("dev") == b"seen from the other"

    # --- reading and writing -------------------------------------------------------------

    def test_round_trip(self, store: StateStore) -> None:
        store.write("dev", b'{"a": 1}')
        assert store.read("dev") == b'{"a": 1}'

    def test_round_trip_of_every_byte_value_and_of_empty_bytes(self, store: StateStore) -> None:
        data = bytes(range(256)) * 4
        store.write("bin", data)
        store.write("empty", b"")
        assert store.read("bin") == data
        assert store.read("empty") == b""

    def test_write_replaces_the_previous_bytes(self, store: StateStore) -> None:
        store.write("dev", b"one, longer than two")
        store.write("dev", b"two")
        assert store.read("dev") == b"two"

    def test_write_refuses_str(self, store: StateStore) -> None:
        store.write("dev", b"ba")
        with pytest.raises(StateError):
            store.write("dev", "text")  # type: ignore[arg-type]
        assert store.read("dev") == b"ba"

    def test_missing_stack(self, store: StateStore) -> None:
        with pytest.raises(StackNotFoundError):
            store.read("nope")
        assert not store.exists("nope")
        assert store.history("nope") == []
        with pytest.raises(StackNotFoundError):
            store.read_version("nope", 1)
        assert store.lock_info("nope") is None
        assert store.break_lock("nope") is None
        with pytest.raises(StackNotFoundError):
            store.delete("nope")

    def test_exists_list_and_delete(self, store: StateStore) -> None:
        assert store.list_stacks() == []
        for name in ("prod", "dev", "staging.eu-1", "A_b"):
            store.write(name, b"x")
        assert store.exists("dev")
        assert store.list_stacks() == ["A_b", "dev", "prod", "staging.eu-1"]
        store.delete("dev")
        assert not store.exists("dev")
        assert store.list_stacks() == ["A_b", "prod", "staging.eu-1"]
        with pytest.raises(StackNotFoundError):
            store.read("dev")
        assert store.read("prod") == b"x"

    def test_delete_removes_history_and_lock(self, store: StateStore) -> None:
        store.write("dev", b"1")
        store.write("dev", b"2")
        store.delete("dev")
        assert store.history("dev") == []
        with pytest.raises(StackNotFoundError):
            store.read_version("dev", 1)
        assert store.lock_info("dev") is None
        store.write("dev", b"again")
        assert [e.version for e in store.history("dev")][:1] in ([1], [])

    def test_a_prefix_of_a_name_is_another_stack(self, store: StateStore) -> None:
        store.write("dev", b"short")
        store.write("dev2", b"long")
        store.write("de", b"shorter")
        store.delete("dev")
        assert store.list_stacks() == ["de", "dev2"]
        assert store.read("dev2") == b"long"

    @pytest.mark.parametrize("name", _INVALID_NAMES)
    def test_invalid_stack_names_are_refused(self, store: StateStore, name: str) -> None:
        for call in (
            lambda: store.write(name, b"x"),
            lambda: store.read(name),
            lambda: store.exists(name),
            lambda: store.lock(name),
            lambda: store.delete(name),
            lambda: store.history(name),
            lambda: store.read_version(name, 1),
            lambda: store.break_lock(name),
            lambda: store.lock_info(name),
        ):
            with pytest.raises(InvalidStackNameError):
                call()
        assert store.list_stacks() == []

    # --- locking ---------------------------------------------------------------------

    def test_lock_excludes_another_store_object(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        store.write("dev", b"before")
        other = store_factory()
        with store.lock("dev", owner="alice") as lock:
            assert lock.held
            assert lock.stack == "dev"
            assert lock.info.owner == "alice"
            with pytest.raises(StateLockedError) as info:
                other.lock("dev")
            message = str(info.value)
            assert lock.info.describe() in message
            assert "break_lock" in message or "veil stack unlock" in message
            with pytest.raises(StateLockedError):
                other.write("dev", b"intruder")
            with pytest.raises(StateLockedError):
                other.delete("dev")
            store.write("dev", b"holder")
        assert not lock.held
        assert other.read("dev") == b"holder"
        other.write("dev", b"after")
        assert store.read("dev") == b"after"

    def test_lock_info_names_the_holder(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        with store.lock("dev", owner="alice") as lock:
            seen = store_factory().lock_info("dev")
            assert seen is not None
            assert (seen.owner, seen.host, seen.pid) == ("alice", lock.info.host, os.getpid())
            assert seen.token == lock.info.token
            when = _dt.datetime.fromisoformat(seen.time)
            assert when.utcoffset() == _dt.timedelta(0)
        assert store_factory().lock_info("dev") is None

    def test_lock_of_a_stack_that_does_not_exist_yet(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        with store.lock("new"):
            with pytest.raises(StateLockedError):
                store_factory().write("new", b"intruder")
            store.write("new", b"mine")
        assert store.read("new") == b"mine"

    def test_locks_of_different_stacks_are_independent(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        with store.lock("dev"):
            other = store_factory()
            other.write("prod", b"x")
            with other.lock("prod"):
                pass

    def test_release_is_idempotent(self, store: StateStore, store_factory: StoreFactory) -> None:
        lock = store.lock("dev")
        lock.release()
        assert not lock.held
        lock.release()
        assert store.lock_info("dev") is None
        with store_factory().lock("dev"):
            lock.release()
            assert store.lock_info("dev") is not None

    def test_write_without_lock_leaves_no_lock(self, store: StateStore) -> None:
        store.write("dev", b"x")
        assert store.lock_info("dev") is None
        store.delete("dev")
        assert store.lock_info("dev") is None

    def test_break_lock_returns_the_holder(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        lock = store.lock("dev", owner="crashed")
        breaker = store_factory()
        broken = breaker.break_lock("dev")
        assert broken == lock.info
        assert breaker.break_lock("dev") is None
        assert breaker.lock_info("dev") is None
        breaker.write("dev", b"after break")
        assert store.read("dev") == b"after break"

    def test_release_removes_only_its_own_lock(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        lock = store.lock("dev")
        other = store_factory()
        other.break_lock("dev")
        with other.lock("dev", owner="bob") as new:
            lock.release()
            assert other.lock_info("dev") == new.info
            with pytest.raises(StateLockedError):
                store.lock("dev")
        assert store.lock_info("dev") is None

    # --- compare-and-swap ----------------------------------------------------------------

    def test_write_after_the_lock_was_broken_and_retaken_fails(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        store.write("dev", b"v1")
        with store.lock("dev"):
            other = store_factory()
            other.break_lock("dev")
            with other.lock("dev", owner="bob"):
                other.write("dev", b"bob's")
                with pytest.raises(StateLockedError):
                    store.write("dev", b"stale")
                with pytest.raises(StateLockedError):
                    store.delete("dev")
            assert store.read("dev") == b"bob's"
        assert store.read("dev") == b"bob's"
        assert [store.read_version("dev", e.version) for e in store.history("dev")][:1] in (
            [b"bob's"],
            [],
        )

    def test_write_after_the_lock_was_broken_and_another_wrote_fails(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        with store.lock("dev"):
            store.write("dev", b"v1")
            other = store_factory()
            other.break_lock("dev")
            other.write("dev", b"other's")
            with pytest.raises(StateLockedError):
                store.write("dev", b"stale")
        assert store.read("dev") == b"other's"

    def test_create_under_a_broken_lock_fails_if_another_created_it(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        with store.lock("new"):
            other = store_factory()
            other.break_lock("new")
            other.write("new", b"other's")
            with pytest.raises(StateLockedError):
                store.write("new", b"stale")
        assert store.read("new") == b"other's"

    # --- history -------------------------------------------------------------------------

    def test_history_is_dense_newest_first(
        self, history_store_factory: Callable[[int], StateStore]
    ) -> None:
        store = history_store_factory(3)
        for i in range(1, 6):
            store.write("hist", b"v%d" % i)
        entries = store.history("hist")
        assert [e.version for e in entries] == [5, 4, 3]
        assert [e.stack for e in entries] == ["hist"] * 3
        assert [store.read_version("hist", e.version) for e in entries] == [b"v5", b"v4", b"v3"]
        assert [e.size for e in entries] == [2, 2, 2]
        for entry in entries:
            when = _dt.datetime.fromisoformat(entry.time)
            assert when.utcoffset() == _dt.timedelta(0)
            assert abs((_dt.datetime.now(_dt.timezone.utc) - when).total_seconds()) < 600
        for pruned in (1, 2, 6):
            with pytest.raises(StackNotFoundError):
                store.read_version("hist", pruned)

    def test_current_version_is_first_in_history(self, store: StateStore) -> None:
        store.write("dev", b"a")
        store.write("dev", b"bb")
        entries = store.history("dev")
        assert entries, "a store keeps history by default"
        assert store.read_version("dev", entries[0].version) == store.read("dev")
        assert entries[0].size == 2

    def test_history_zero_keeps_none(
        self, history_store_factory: Callable[[int], StateStore]
    ) -> None:
        store = history_store_factory(0)
        store.write("nohist", b"a")
        store.write("nohist", b"b")
        assert store.history("nohist") == []
        assert store.read("nohist") == b"b"

    def test_kept_versions_do_not_change_when_the_stack_is_written(
        self, history_store_factory: Callable[[int], StateStore]
    ) -> None:
        store = history_store_factory(5)
        bodies = [b"first", b"second, longer", b"3", b""]
        for body in bodies:
            store.write("kept", body)
        entries = store.history("kept")
        assert [store.read_version("kept", e.version) for e in entries] == bodies[::-1]
        assert [e.size for e in entries] == [len(b) for b in bodies[::-1]]

    def test_read_version_refuses_a_non_int(self, store: StateStore) -> None:
        store.write("dev", b"a")
        with pytest.raises(StateError):
            store.read_version("dev", "1")  # type: ignore[arg-type]

    # --- atomicity and concurrency ---------------------------------------------------------

    def test_readers_see_old_or_new_bytes_never_a_mix(
        self, store: StateStore, store_factory: StoreFactory
    ) -> None:
        size = 256 * 1024
        store.write("atomic", _payload(0, size))
        reader = store_factory()
        seen: list[bytes] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def read_loop() -> None:
            try:
                while not stop.is_set():
                    seen.append(reader.read("atomic"))
            except BaseException as exc:  # reported below
                failures.append(exc)

        thread = threading.Thread(target=read_loop)
        thread.start()
        try:
            for n in range(1, 21):
                store.write("atomic", _payload(n, size))
        finally:
            stop.set()
            thread.join(60)
        assert not failures, failures
        assert seen
        bad = [len(b) for b in seen if not _is_payload(b, size)]
        assert not bad, f"{len(bad)} of {len(seen)} reads saw a mix or a partial write"

    def test_two_processes_saving_in_a_loop_lose_nothing(
        self, store: StateStore, subprocess_prelude: str
    ) -> None:
        store.write("counter", b"0")
        per_process = self.concurrent_saves
        procs = [
            self._spawn(subprocess_prelude, _INCREMENT, store.url, "counter", str(per_process))
            for _ in range(2)
        ]
        outputs = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=120)
            finally:
                _reap(proc)
            assert proc.returncode == 0, err
            outputs.append(out.split())
        assert [int(o[0]) for o in outputs] == [per_process, per_process]
        assert store.read("counter") == b"%d" % (2 * per_process)
        versions = [e.version for e in store.history("counter")]
        if versions:  # dense: one version per save, none lost or doubled
            assert versions[0] == 2 * per_process + 1
            assert versions == list(range(versions[0], versions[0] - len(versions), -1))
        assert store.lock_info("counter") is None

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
    def test_writer_killed_mid_write_leaves_old_or_new_bytes(
        self, store: StateStore, subprocess_prelude: str
    ) -> None:
        size = self.payload_size
        started = time.monotonic()
        store.write("crash", _payload(0, size))
        store.write("crash", _payload(0, size))
        per_write = (time.monotonic() - started) / 2
        rng = random.Random(20240601)  # noqa: S311 (timing only)
        forks = self._spawn(subprocess_prelude, _WRITER_FORKS, store.url, "crash", str(size))
        assert forks.stdout is not None
        assert forks.stdin is not None
        landed = 0
        try:
            line = forks.stdout.readline().strip()
            assert line == "forking", forks.stderr.read() if forks.stderr else line
            for trial in range(self.kill_trials):
                forks.stdin.write(f"fork {1000 * (trial + 1)}\n")
                forks.stdin.flush()
                line = forks.stdout.readline().strip()
                assert line.startswith("ready "), line
                pid = int(line.split()[1])
                # Kills come at random moments within about three writes; if none has
                # landed by half way (a loaded machine), the window widens.
                late = not landed and trial >= self.kill_trials // 2
                time.sleep(rng.uniform(0.0, (20 if late else 3) * per_write + 0.005))
                os.kill(pid, signal.SIGKILL)
                forks.stdin.write(f"reap {pid}\n")
                forks.stdin.flush()
                assert forks.stdout.readline().strip() == "reaped"
                data = store.read("crash")
                assert _is_payload(data, size), f"trial {trial}: the stack holds a mix"
                if int(data[:8]) >= 1000:
                    landed += 1
                if not self.takes_over_stale_locks:
                    store.break_lock("crash")
                store.write("crash", _payload(trial + 1, size))  # writable again
        finally:
            _reap(forks)
        assert landed > 0, "no killed writer ever wrote: the kills came too early to test"
