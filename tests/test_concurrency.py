"""Two processes saving one stack through `Stack`: the second writer is locked out,
and no update is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import veil
from veil import Secret, Stack, StateLockedError
from veil.providers import PassphraseProvider

PASSPHRASE = "correct horse battery staple"

_PRELUDE = f"""
import sys, time
import veil
from veil import Secret, Stack, StateLockedError
from veil.providers import PassphraseProvider

backend, project = sys.argv[1], sys.argv[2]

def provider():
    return PassphraseProvider(
        passphrase={PASSPHRASE!r}, memory_cost=8, iterations=1, lanes=1, insecure_weak_kdf=True
    )
"""

_HOLDER = """
with Stack.open("dev", backend=backend, project_dir=project, secrets_provider=provider()) as stack:
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until told to save
    stack.export("holder", Secret("holder-secret-1"))
    stack.save()
print("saved", flush=True)
"""

_INCREMENTER = """
name = sys.argv[3]
done = 0
while done < 10:
    try:
        stack = Stack.open("dev", backend=backend, project_dir=project, secrets_provider=provider())
    except StateLockedError:
        time.sleep(0.002)
        continue
    with stack:
        outputs = stack.outputs
        stack.export("count", outputs.get("count", 0) + 1)
        stack.export(name, Secret(f"{name}-{done}"))
        stack.config.set(f"{name}:n", done)
        stack.save()
    done += 1
"""


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_PRELUDE + code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def fast() -> PassphraseProvider:
    return PassphraseProvider(
        passphrase=PASSPHRASE, memory_cost=8, iterations=1, lanes=1, insecure_weak_kdf=True
    )


def create(tmp_path: Path) -> str:
    backend = f"file://{tmp_path / 'state'}"
    with Stack.create("dev", backend=backend, secrets_provider=fast(), project_dir=tmp_path) as s:
        s.export("count", 0)
        s.save()
    return backend


def test_a_second_process_gets_state_locked_and_loses_nothing(tmp_path: Path) -> None:
    backend = create(tmp_path)
    holder = spawn(_HOLDER, backend, str(tmp_path))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        # Another process (this one) cannot open the stack for writing...
        with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
            Stack.open("dev", backend=backend, project_dir=tmp_path, secrets_provider=fast())
        # ...but can read it.
        with Stack.open(
            "dev", backend=backend, project_dir=tmp_path, secrets_provider=fast(), lock=False
        ) as ro:
            assert ro.serial == 2
        out, err = holder.communicate("go\n", timeout=60)
    finally:
        holder.kill()
    assert holder.returncode == 0, err
    assert out == "saved\n"

    # Once released, this process saves on top of the holder's update.
    with Stack.open("dev", backend=backend, project_dir=tmp_path, secrets_provider=fast()) as stack:
        stack.export("second", Secret("second-secret-2"))
        stack.save()
    with Stack.open(
        "dev", backend=backend, project_dir=tmp_path, secrets_provider=fast(), lock=False
    ) as stack:
        assert stack.serial == 4
        assert stack.outputs["holder"] == Secret("holder-secret-1")
        assert stack.outputs["second"] == Secret("second-secret-2")


def test_two_processes_incrementing_lose_no_update(tmp_path: Path) -> None:
    backend = create(tmp_path)
    workers = [spawn(_INCREMENTER, backend, str(tmp_path), name) for name in ("a", "b")]
    for worker in workers:
        _out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    with Stack.open(
        "dev", backend=backend, project_dir=tmp_path, secrets_provider=fast(), lock=False
    ) as stack:
        assert stack.outputs["count"] == 20
        assert stack.serial == 22  # create, the first save, then 20 increments
        assert stack.outputs["a"] == Secret("a-9")
        assert stack.outputs["b"] == Secret("b-9")
        assert veil.reveal(stack.config.require("a:n")) == 9
        assert veil.reveal(stack.config.require("b:n")) == 9
