"""Failures of pending Outputs: recovered, propagated, or reported at exit."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

import veil
from veil import Output


async def _boom() -> str:
    raise ValueError("boom")


def test_recover_replaces_the_value_of_a_failed_output() -> None:
    async def main() -> str | None:
        o = Output.from_input(_boom()).recover(lambda e: f"recovered {type(e).__name__}")
        return await o.future()

    assert asyncio.run(main()) == "recovered ValueError"


def test_recover_keeps_the_value_of_an_output_that_did_not_fail() -> None:
    async def ok() -> str:
        return "fine"

    async def main() -> str | None:
        return await Output.from_input(ok()).recover(lambda e: "never").future()

    assert asyncio.run(main()) == "fine"
    known = Output.secret("x")
    assert known.recover(lambda e: "never") is known


def test_recover_may_return_a_secret_output() -> None:
    async def main() -> tuple[str | None, bool]:
        o = Output.from_input(_boom()).recover(lambda e: Output.secret("s"))
        return await o.future(), await o.is_secret()

    assert asyncio.run(main()) == ("s", True)


def test_a_failure_inside_recover_surfaces_when_awaited() -> None:
    def bad(e: Exception) -> str:
        raise KeyError("again")

    async def main() -> None:
        await Output.from_input(_boom()).recover(bad).future()

    with pytest.raises(KeyError, match="again"):
        asyncio.run(main())


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_failure_never_read_is_reported_at_exit_without_the_secret() -> None:
    done = _run(
        """
        import asyncio, veil
        from veil import Output
        async def boom():
            raise ValueError("token hunter2-hunter2 rejected")
        async def main():
            veil.secret("hunter2-hunter2")
            Output.from_input(boom()).apply(lambda v: v)
            await asyncio.sleep(0.01)
        asyncio.run(main())
        """
    )
    assert done.returncode == 0
    assert "1 Output(s) failed and were never awaited or read" in done.stderr
    assert "ValueError" in done.stderr
    assert "hunter2-hunter2" not in done.stderr


def test_a_failure_that_was_awaited_is_not_reported_again() -> None:
    done = _run(
        """
        import asyncio
        from veil import Output
        async def boom():
            raise ValueError("x")
        async def main():
            try:
                await Output.from_input(boom()).apply(lambda v: v).future()
            except ValueError:
                pass
        asyncio.run(main())
        """
    )
    assert done.returncode == 0, done.stderr
    assert "never awaited" not in done.stderr


def test_a_failed_output_raises_its_exception_when_revealed() -> None:
    async def main() -> Output[str]:
        o = Output.from_input(_boom())
        with contextlib.suppress(ValueError):
            await o.future()
        return o

    failed = asyncio.run(main())
    with pytest.raises(ValueError, match="boom"):
        veil.reveal(failed)


# --- secretness of values a function returns ----------------------------------------


def test_apply_returning_a_secret_gives_a_secret_output_of_its_value() -> None:
    out = Output.from_input("pw").apply(lambda v: veil.Secret(v + "!"))
    assert veil.is_secret(out)
    assert veil.reveal(out) == "pw!"


def test_apply_returning_a_container_holding_a_secret_is_secret() -> None:
    out = Output.from_input(1).apply(lambda v: {"n": v, "pw": veil.Secret("x")})
    assert veil.is_secret(out)


def test_apply_returning_a_container_holding_a_secret_output_is_secret() -> None:
    out = Output.from_input(1).apply(lambda v: [v, Output.secret(2)])
    assert veil.is_secret(out)


def test_apply_returning_a_plain_container_stays_plain() -> None:
    out = Output.from_input(1).apply(lambda v: [v, {"k": (2, "x")}])
    assert not veil.is_secret(out)
    assert veil.reveal(out) == [1, {"k": (2, "x")}]


# --- threads --------------------------------------------------------------------------


def test_outputs_chained_and_settled_on_different_threads_all_settle() -> None:
    import threading

    pairs: list[tuple[Output[int], Callable[[Output[int]], None]]] = [
        veil.deferred_output() for _ in range(3000)
    ]
    derived: list[list[Output[int]]] = [[] for _ in pairs]
    start = threading.Barrier(3)

    def resolve(offset: int) -> None:
        start.wait()
        for i in range(offset, len(pairs), 2):
            pairs[i][1](Output.from_input(i))

    def chain() -> None:
        start.wait()
        for i, (out, _resolve) in enumerate(pairs):
            derived[i].append(out.apply(lambda v: v + 1))

    threads = [threading.Thread(target=f) for f in (lambda: resolve(0), lambda: resolve(1), chain)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    for i, outs in enumerate(derived):
        assert [veil.reveal(o) for o in outs] == [i + 1]


def test_an_unread_failure_is_reported_without_keeping_its_exception_alive() -> None:
    done = _run(
        """
        import asyncio, gc, weakref
        from veil import Output
        class Payload:
            pass
        refs = []
        async def boom():
            exc = ValueError("failed late")
            exc.payload = Payload()  # held by the exception, and so by its Output
            refs.append(weakref.ref(exc.payload))
            raise exc
        async def main():
            Output.from_input(boom())
            await asyncio.sleep(0.01)
        asyncio.run(main())
        gc.collect()
        print("alive" if refs[0]() is not None else "freed")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "freed"
    assert "1 Output(s) failed and were never awaited or read" in done.stderr
    assert "ValueError: failed late" in done.stderr


def test_awaitables_queued_without_a_loop_start_once_when_loops_await_at_once() -> None:
    import threading

    started: list[int] = []

    async def value(i: int) -> int:
        started.append(i)
        return i

    # No event loop is running here: the awaitables wait for the first loop to await.
    outs = [Output.from_input(value(i)) for i in range(1000)]
    barrier = threading.Barrier(4)
    results: list[list[int | None]] = []
    errors: list[BaseException] = []

    def await_all() -> None:
        async def main() -> list[int | None]:
            barrier.wait()
            return [await o.future() for o in outs]

        try:
            results.append(asyncio.run(main()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=await_all) for _ in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert results == [list(range(1000))] * 4
    assert sorted(started) == list(range(1000))  # each started exactly once
