"""Every ```python block of every docs/*.md file runs, in order, in one namespace per
file, in a temporary directory, with ``VEIL_PASSPHRASE`` unset unless the doc sets it.

A block fenced as ```python no-run, or preceded by ``<!-- no-run -->``, is shown but not
run. A missing optional dependency fails the doc's test: it is not a reason to skip.
"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
NO_RUN_COMMENT = "<!-- no-run -->"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line number, source)`` of each runnable python block, in order."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    previous = ""  # the last non-blank line before a fence
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        fence, indent = m["fence"], m["indent"]
        words = m["info"].strip().split()
        body: list[str] = []
        start = i + 2
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if close and close["fence"].startswith(fence) and not close["info"].strip():
                break
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line)
            i += 1
        i += 1
        runnable = (
            bool(words)
            and words[0] == "python"
            and "no-run" not in words[1:]
            and previous != NO_RUN_COMMENT
        )
        if runnable:
            blocks.append((start, "\n".join(body) + "\n"))
        previous = ""
    return blocks


README = DOCS.parent / "README.md"

# How many python blocks each doc runs. A doc with none is skipped, saying so; a block
# added, removed or fenced as no-run changes its count here.
BLOCKS: dict[str, int] = {
    "api.md": 1,
    "architecture.md": 0,
    "backends.md": 1,
    "cli.md": 0,
    "ephemeral.md": 5,
    "format.md": 2,
    "outputs.md": 10,
    "performance.md": 0,
    "providers.md": 8,
    "schemas.md": 5,
    "pulumi.md": 6,
    "rotation.md": 0,
    "security.md": 0,
    "stacks.md": 9,
    "README.md": 1,
}


def doc_files() -> list[str]:
    return [*sorted(p.name for p in DOCS.glob("*.md")), "README.md"]


def doc_params() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.skip(reason=f"{name} has no python blocks"))
        if BLOCKS.get(name) == 0
        else name
        for name in doc_files()
    ]


def test_every_doc_has_its_block_count() -> None:
    assert set(doc_files()) == set(BLOCKS)


def test_python_blocks_are_found_in_order() -> None:
    text = "intro\n```python\na = 1\n```\n\n```bash\nls\n```\n```python\nb = a\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (10, "b = a\n")]


def test_no_run_fence_is_skipped() -> None:
    assert python_blocks("```python no-run\nraise SystemExit\n```\n") == []


def test_no_run_comment_is_skipped() -> None:
    text = "<!-- no-run -->\n\n```python\nraise SystemExit\n```\n```python\nx = 1\n```\n"
    assert python_blocks(text) == [(7, "x = 1\n")]


def test_block_with_nested_shorter_fence_is_whole() -> None:
    text = "````python\ns = '''\n```\n'''\n````\n"
    assert python_blocks(text) == [(2, "s = '''\n```\n'''\n")]


@pytest.mark.parametrize("name", doc_params())
def test_doc_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = README if name == "README.md" else DOCS / name
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    assert len(blocks) == BLOCKS[name], f"{name}: {len(blocks)} python blocks"
    ran = 0
    monkeypatch.chdir(tmp_path)
    saved = dict(os.environ)
    os.environ.pop("VEIL_PASSPHRASE", None)
    if path == README:
        os.environ["VEIL_PASSPHRASE"] = "readme-example"  # as its example says
    # A real module, so that dataclasses, pickle and typing can find what a doc defines.
    module = types.ModuleType(f"veil_docs_{path.stem}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        for line, source in blocks:
            # Pad so that a traceback names the line in the .md file.
            code = compile("\n" * (line - 1) + source, str(path), "exec")
            exec(code, namespace)  # noqa: S102 (running the documentation is the point)
            ran += 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert ran == BLOCKS[name] > 0
