"""``veil completion bash|zsh``: scripts generated from the parser, run in the shells."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cli_support import call, run
from veil.cli import build_parser


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("completion")
    out = {}
    for shell in ("bash", "zsh"):
        result = (
            run(folder, "completion", shell)
            if shell == "bash"
            else call(folder, "completion", shell)
        )
        assert result.code == 0, result
        out[shell] = folder / f"veil.{shell}"
        out[shell].write_text(result.out)
    return out


def _bash(script: Path, words: list[str]) -> list[str]:
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _veil; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_bash_completes_every_command_of_the_parser(scripts: dict[str, Path]) -> None:
    parser = build_parser()
    groups = next(a for a in parser._actions if a.dest == "group")
    assert sorted(_bash(scripts["bash"], ["veil", ""])) == sorted(groups.choices)  # type: ignore[arg-type]
    stack = _bash(scripts["bash"], ["veil", "stack", ""])
    for command in ("init", "ls", "select", "rm", "output", "rotate", "change-secrets-provider",
                    "recipients", "history", "export", "import", "unlock"):  # fmt: skip
        assert command in stack
    assert _bash(scripts["bash"], ["veil", "-s", "dev", "stack", "recipients", ""]) == [
        "add",
        "ls",
        "rm",
    ]


def test_bash_completes_options_and_skips_option_values(scripts: dict[str, Path]) -> None:
    options = _bash(scripts["bash"], ["veil", "--stack", "config", "stack", "rotate", "--"])
    assert "--lock-timeout" in options
    assert "--allow-rollback" in options
    assert _bash(scripts["bash"], ["veil", "config", "set", "--pa"]) == ["--path"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses_and_completes(scripts: dict[str, Path]) -> None:
    check = subprocess.run(["zsh", "-n", str(scripts["zsh"])], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    program = (
        'compdef() { :; }; compadd() { print -r -- "$*"; }; _files() { print files; }; '
        f"source {scripts['zsh']}; "
        'words=(veil stack recipients ""); CURRENT=4; PREFIX=""; _veil; '
        'words=(veil stack export --file ""); CURRENT=5; _veil; '
        "words=(veil config set --pa); CURRENT=4; PREFIX=--pa; _veil"
    )
    proc = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "-- add ls rm"
    assert lines[1] == "files"
    assert "--path" in lines[2].split()
