"""A writer killed with SIGKILL at random moments never leaves a broken stack."""

from __future__ import annotations

import os
import random
import signal
import time
import warnings
from pathlib import Path

import pytest

from veil import Secret
from veil.providers import LocalKeyProvider
from veil.state import Document, FileStore, load_document, loads

KILLS = 60

# The writer runs in a forked child that is killed with SIGKILL: POSIX only.
pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="needs os.fork to kill a writer half way (POSIX)"
)


def _writer(root: Path, key: Path) -> None:
    """Save the stack in a loop, each save a new serial and new secrets."""
    provider = LocalKeyProvider(key)
    store = FileStore(root, history_size=3)
    doc = load_document(store.read("dev"), provider=provider)
    n = 0
    while True:
        n += 1
        tree = {
            "outputs": {f"k{i}": Secret(f"secret-{n}-{i}") for i in range(50)},
            "plain": ["x" * 200] * 20,
            "n": n,
        }
        with store.lock("dev"):
            data, doc = _dump(tree, provider, doc)
            store.write("dev", data)


def _dump(tree: object, provider: LocalKeyProvider, doc: Document) -> tuple[bytes, Document]:
    from veil.state import dump_document

    return dump_document(tree, provider=provider, stack="dev", previous=doc)


def test_killed_writer_leaves_old_or_new_version(tmp_path: Path) -> None:
    key = tmp_path / "dev.key"
    provider = LocalKeyProvider(key)
    store = FileStore(tmp_path / "state", history_size=3)
    from veil.state import dumps

    store.write("dev", dumps({"n": 0}, provider=provider, stack="dev"))
    rng = random.Random(1234)
    last_serial = 1
    advanced = 0
    for _ in range(KILLS):
        pid = os.fork()
        if pid == 0:  # the child: write until killed
            try:
                warnings.simplefilter("ignore")
                _writer(store.root, key)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        doc = load_document(store.read("dev"), provider=provider)  # old or new, never broken
        assert doc.serial >= last_serial
        advanced += doc.serial > last_serial
        last_serial = doc.serial
        for entry in store.history("dev"):
            loads(store.read_version("dev", entry.version), provider=provider)
    assert advanced > KILLS // 5  # the writer did get to save between kills
    # The next writer takes the dead writer's lock over and clears its leftovers.
    store.write("dev", dumps({"n": -1}, provider=provider, stack="dev"))
    assert sorted(os.listdir(store.root / "stacks")) == ["dev.json"]
    assert store.lock_info("dev") is None
