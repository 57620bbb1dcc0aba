"""How a pending Output settles: its cell, the trampoline that runs callbacks, the
start of awaitables on an event loop, and the report of failures no one read.

A pending Output holds a :class:`Cell` that collects callbacks (other Outputs waiting
on it) and waiters (``await`` on an event loop). When it settles, the callbacks run
from one trampoline queue per thread, never recursively, so chains of any length
settle in constant stack depth.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ._redact import redact

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "Cell",
    "cells_lock",
    "describe_failure",
    "fire",
    "note_unobserved",
    "observe",
    "running_loop",
    "schedule",
    "start",
    "start_unstarted",
    "take",
]


class _Trampoline(threading.local):
    """Callbacks waiting to run, per thread: a thread that settles an Output runs the
    callbacks it caused, so none is stranded by another thread's drain ending."""

    def __init__(self) -> None:
        self.queue: collections.deque[Callable[[], None]] = collections.deque()
        self.draining = False


_trampoline = _Trampoline()


def schedule(cb: Callable[[], None]) -> None:
    """Run ``cb`` from the trampoline: after the current callback, never nested."""
    t = _trampoline
    t.queue.append(cb)
    if t.draining:
        return
    t.draining = True
    try:
        queue = t.queue
        while queue:
            queue.popleft()()
    finally:
        t.draining = False


class Cell:
    """The pending part of an Output: who waits for it, and how it failed."""

    __slots__ = ("callbacks", "exc", "failed", "report_key", "waiters")

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.exc: BaseException | None = None
        self.failed = False
        # Its entry in the report of unobserved failures, while it has one.
        self.report_key: int | None = None


cells_lock = threading.Lock()
"""Guards the hand-over between a pending Output's state and its waiting lists, for
Outputs settled on one thread and awaited or chained on another."""


def take(cell: Cell) -> tuple[list[asyncio.Future[None]], list[Callable[[], None]]]:
    """Empty the cell's waiting lists and return what they held (under ``cells_lock``)."""
    waiters, callbacks = cell.waiters, cell.callbacks
    cell.waiters, cell.callbacks = [], []
    return waiters, callbacks


def fire(waiters: list[asyncio.Future[None]], callbacks: list[Callable[[], None]]) -> None:
    """Wake the waiters (each on its own loop) and run the callbacks."""
    for fut in waiters:
        if fut.done():
            continue  # its awaiter gave up (cancelled, timed out)
        # A closed event loop raises RuntimeError: nobody waits there any more.
        with contextlib.suppress(RuntimeError):
            fut.get_loop().call_soon_threadsafe(_wake, fut)
    for cb in callbacks:
        schedule(cb)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# --- failures no one has read: reported at exit, so none passes silently ------------------

# One line of text per failure, by report key: neither the cell nor the exception (with
# its traceback and every frame's locals) is kept alive by the report.
_unobserved: dict[int, str] = {}
_report_keys = itertools.count()


def describe_failure(exc: BaseException) -> str:
    """The line the exit report shows for ``exc``, with every known secret masked."""
    try:
        text = redact(str(exc))
    except Exception:
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}"


def note_unobserved(cell: Cell, line: str) -> None:
    """Record the failure of ``cell`` for the exit report (under ``cells_lock``)."""
    key = next(_report_keys)
    cell.report_key = key
    _unobserved[key] = line


def observe(cell: Cell) -> None:
    """The failure of ``cell`` was read: it leaves the exit report."""
    key = cell.report_key
    if key is not None:
        cell.report_key = None
        _unobserved.pop(key, None)


@atexit.register
def _report_unobserved() -> None:
    lines = list(_unobserved.values())
    if not lines:
        return
    sys.stderr.write(
        f"veil: {len(lines)} Output(s) failed and were never awaited or read; the first "
        f"failed with {lines[0]}\n"
    )


# --- awaitables on the event loop ----------------------------------------------------------

# Awaitables met while no event loop was running: started by the first await, on any
# thread, each exactly once.
_unstarted: list[Callable[[asyncio.AbstractEventLoop], None]] = []
_unstarted_lock = threading.Lock()
# Strong references to running tasks (the loop keeps only weak ones).
_tasks: set[asyncio.Task[None]] = set()


def start_unstarted(loop: asyncio.AbstractEventLoop) -> None:
    """Start on ``loop`` every awaitable waiting for an event loop."""
    while True:
        with _unstarted_lock:
            if not _unstarted:
                return
            todo = _unstarted.copy()
            _unstarted.clear()
        for begin in todo:
            begin(loop)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop of this thread, or None."""
    # asyncio is imported only by programs that use it: no import cost for the rest.
    if "asyncio" not in sys.modules:
        return None
    try:
        return sys.modules["asyncio"].get_running_loop()  # type: ignore[no-any-return]
    except RuntimeError:
        return None


def start(make: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine on the running loop now, or on the first loop that awaits."""

    def begin(loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(cast(Any, make()))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    loop = running_loop()
    if loop is not None:
        begin(loop)
    else:
        with _unstarted_lock:
            _unstarted.append(begin)
