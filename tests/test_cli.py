"""The ``veil`` command: stacks, config, outputs, export/import, and its error lines.

Most runs call ``veil.cli.main`` in-process; a few run the real console script in a
subprocess (stdin is then not a terminal)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import veil
from veil import LeakWarning, Secret, Stack
from veil.cli import main
from veil.providers import PassphraseProvider

PASSPHRASE = "correct horse battery staple"
# Below OWASP's minimums, to keep the tests fast: every run opts out explicitly, with
# VEIL_INSECURE_WEAK_KDF=1 in its environment (the `project` fixture and _run).
FAST_URL = "passphrase://?memory_cost=8&iterations=1&lanes=1"
DB_PASSWORD = "pw-0123456789-db"
TOKEN = "tok-abcdef-98765"


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")
    monkeypatch.delenv("VEIL_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("VEIL_STACK", raising=False)
    monkeypatch.setenv("VEIL_BACKEND_URL", f"file://{tmp_path / 'state'}")
    return tmp_path


@pytest.fixture
def veil_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(*argv: str, stdin: str | bytes | None = None) -> Result:
        capsys.readouterr()
        if stdin is not None:
            data = stdin.encode() if isinstance(stdin, str) else stdin
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def dev(project: Path, veil_cli: Any) -> Path:
    """Stack 'dev' with a plain and a secure config value and some outputs."""
    assert veil_cli("stack", "init", "dev", "--secrets-provider", FAST_URL).code == 0
    assert veil_cli("-s", "dev", "config", "set", "app:region", "eu-west-1").code == 0
    assert veil_cli("-s", "dev", "config", "set", "db:password", DB_PASSWORD, "--secret").code == 0
    with Stack.open("dev") as stack:
        stack.export("region", "eu-west-1")
        stack.export("token", Secret(TOKEN))
        stack.export("db", {"host": "db.internal", "password": veil.secret(DB_PASSWORD)})
        stack.save()
    return project


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.code != 0
    assert result.err.startswith("veil: error: ")
    assert result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err


# --- stack init / ls ---------------------------------------------------------------------


def test_stack_init_creates_state_and_config(project: Path, veil_cli: Any) -> None:
    result = veil_cli("stack", "init", "dev", "--secrets-provider", FAST_URL)
    assert result.code == 0
    assert "Created stack 'dev'" in result.out
    assert (project / "veil.dev.json").is_file()
    assert (project / "state" / "stacks" / "dev.json").is_file()


def test_stack_init_with_a_key_file_provider(project: Path, veil_cli: Any) -> None:
    key = project / "dev.key"
    result = veil_cli("stack", "init", "dev", "--secrets-provider", f"file://{key}")
    assert result.code == 0
    assert "file://" in result.out
    assert key.is_file()


def test_stack_init_twice_fails(dev: Path, veil_cli: Any) -> None:
    assert_one_error_line(veil_cli("stack", "init", "dev"), "already exists")


def test_stack_ls_lists_stacks(project: Path, veil_cli: Any) -> None:
    for name in ("dev", "prod"):
        veil_cli("stack", "init", name, "--secrets-provider", FAST_URL)
    result = veil_cli("stack", "ls")
    assert result.code == 0
    assert [line.split()[0] for line in result.out.splitlines()] == ["NAME", "dev", "prod"]


def test_stack_ls_of_an_empty_backend_prints_nothing(project: Path, veil_cli: Any) -> None:
    result = veil_cli("stack", "ls")
    assert (result.code, result.out) == (0, "")


# --- config ---------------------------------------------------------------------------


def test_config_get_plain_value(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "config", "get", "app:region")
    assert (result.code, result.out) == (0, "eu-west-1\n")


def test_config_get_masks_a_secret(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "config", "get", "db:password")
    assert (result.code, result.out) == (0, "[secret]\n")


def test_config_get_show_secrets_prints_it(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "config", "get", "db:password", "--show-secrets")
    assert (result.code, result.out) == (0, DB_PASSWORD + "\n")


def test_config_set_secret_reads_stdin(project: Path, veil_cli: Any) -> None:
    veil_cli("stack", "init", "dev", "--secrets-provider", FAST_URL)
    result = veil_cli("-s", "dev", "config", "set", "api:token", "--secret", stdin=TOKEN + "\n")
    assert result.code == 0
    text = (project / "veil.dev.json").read_text()
    assert TOKEN not in text
    assert json.loads(text)["config"]["api:token"]["secure"].startswith("veil:v1:")
    shown = veil_cli("-s", "dev", "config", "get", "api:token", "--show-secrets")
    assert shown.out == TOKEN + "\n"


def test_config_set_json_value(dev: Path, veil_cli: Any) -> None:
    assert veil_cli("-s", "dev", "config", "set", "app:sizes", "[1, 2]", "--json").code == 0
    assert json.loads((dev / "veil.dev.json").read_text())["config"]["app:sizes"] == [1, 2]
    assert veil_cli("-s", "dev", "config", "get", "app:sizes").out == "[1, 2]\n"


def test_config_set_invalid_json_fails(dev: Path, veil_cli: Any) -> None:
    assert_one_error_line(
        veil_cli("-s", "dev", "config", "set", "k", "[1,", "--json"), "not valid JSON"
    )


def test_config_ls_masks_secrets(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "config", "ls")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["KEY", "VALUE"]
    assert lines[1].split() == ["app:region", "eu-west-1"]
    assert lines[2].split() == ["db:password", "[secret]"]
    assert DB_PASSWORD not in result.out


def test_config_ls_show_secrets_json(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "config", "ls", "--show-secrets", "--json")
    assert json.loads(result.out) == {"app:region": "eu-west-1", "db:password": DB_PASSWORD}


def test_config_rm_removes_the_key(dev: Path, veil_cli: Any) -> None:
    assert veil_cli("-s", "dev", "config", "rm", "app:region").code == 0
    assert "app:region" not in json.loads((dev / "veil.dev.json").read_text())["config"]
    assert_one_error_line(veil_cli("-s", "dev", "config", "get", "app:region"), "app:region")


def test_config_rm_of_a_missing_key_fails(dev: Path, veil_cli: Any) -> None:
    assert_one_error_line(veil_cli("-s", "dev", "config", "rm", "nope"), "'nope' is not set")


def test_config_set_while_a_program_holds_the_stack_fails(dev: Path, veil_cli: Any) -> None:
    with Stack.open("dev"):
        result = veil_cli("-s", "dev", "config", "set", "k", "v")
    assert_one_error_line(result, "already has stack 'dev' open")


# --- outputs ---------------------------------------------------------------------------


def test_stack_output_table_masks_secrets(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "stack", "output")
    assert result.code == 0
    assert result.out.splitlines()[0].split() == ["OUTPUT", "VALUE"]
    assert "[secret]" in result.out
    assert "eu-west-1" in result.out
    assert TOKEN not in result.out
    assert DB_PASSWORD not in result.out


def test_stack_output_one_name(dev: Path, veil_cli: Any) -> None:
    assert veil_cli("-s", "dev", "stack", "output", "token").out == "[secret]\n"
    assert veil_cli("-s", "dev", "stack", "output", "region").out == "eu-west-1\n"
    shown = veil_cli("-s", "dev", "stack", "output", "token", "--show-secrets")
    assert shown.out == TOKEN + "\n"


def test_stack_output_json(dev: Path, veil_cli: Any) -> None:
    masked = json.loads(veil_cli("-s", "dev", "stack", "output", "--json").out)
    assert masked == {
        "region": "eu-west-1",
        "token": "[secret]",
        "db": {"host": "db.internal", "password": "[secret]"},
    }
    shown = json.loads(veil_cli("-s", "dev", "stack", "output", "--json", "--show-secrets").out)
    assert shown["db"] == {"host": "db.internal", "password": DB_PASSWORD}


def test_stack_output_of_an_unknown_name_fails(dev: Path, veil_cli: Any) -> None:
    assert_one_error_line(veil_cli("-s", "dev", "stack", "output", "nope"), "'nope'")


# --- export / import ---------------------------------------------------------------------


def test_stack_export_prints_the_encrypted_document(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "stack", "export")
    assert result.code == 0
    assert result.out.encode() == (dev / "state" / "stacks" / "dev.json").read_bytes()
    assert TOKEN not in result.out


def test_stack_export_does_not_need_the_passphrase(
    dev: Path, veil_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VEIL_PASSPHRASE")
    assert veil_cli("-s", "dev", "stack", "export").code == 0


def test_stack_export_show_secrets_is_plaintext(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "stack", "export", "--show-secrets")
    doc = json.loads(result.out)
    assert doc["stack"] == "dev"
    assert doc["tree"]["outputs"]["token"] == {"$veil:secret": TOKEN}


def test_import_of_the_encrypted_export_restores_outputs(dev: Path, veil_cli: Any) -> None:
    exported = dev / "export.json"
    assert veil_cli("-s", "dev", "stack", "export", "--file", str(exported)).code == 0
    with Stack.open("dev") as stack:
        stack.export("token", "replaced")
        with pytest.warns(LeakWarning, match="sealed in the previous save"):
            stack.save()  # a sealed path stays sealed
    result = veil_cli("-s", "dev", "stack", "import", "--file", str(exported))
    assert result.code == 0
    assert "Imported the export into stack 'dev'" in result.out
    with Stack.open("dev", lock=False) as stack:
        assert stack.outputs["token"] == Secret(TOKEN)


def test_import_of_the_plaintext_export_keeps_secrets_secret(dev: Path, veil_cli: Any) -> None:
    plain = veil_cli("-s", "dev", "stack", "export", "--show-secrets").out
    with Stack.open("dev") as stack:
        stack._exports = {}
        stack.save()
    assert veil_cli("-s", "dev", "stack", "import", stdin=plain).code == 0
    state = (dev / "state" / "stacks" / "dev.json").read_bytes()
    assert TOKEN.encode() not in state
    with Stack.open("dev", lock=False) as stack:
        outputs = stack.outputs
    assert outputs["token"] == Secret(TOKEN)
    assert outputs["db"]["host"] == "db.internal"
    assert outputs["db"]["password"] == Secret(DB_PASSWORD)


def test_import_of_a_tampered_document_fails(dev: Path, veil_cli: Any) -> None:
    exported = veil_cli("-s", "dev", "stack", "export").out
    doc = json.loads(exported)
    doc["tree"]["outputs"]["region"] = "us-east-1"
    before = (dev / "state" / "stacks" / "dev.json").read_bytes()
    result = veil_cli("-s", "dev", "stack", "import", stdin=json.dumps(doc))
    assert_one_error_line(result, "MAC")
    assert (dev / "state" / "stacks" / "dev.json").read_bytes() == before


def test_import_of_non_json_fails(dev: Path, veil_cli: Any) -> None:
    assert_one_error_line(veil_cli("-s", "dev", "stack", "import", stdin="nope"), "not JSON")


def test_import_nested_too_deeply_fails_with_one_line(dev: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "dev", "stack", "import", stdin="[" * 100_000 + "]" * 100_000)
    assert_one_error_line(result, "not JSON")
    assert "unexpected" not in result.err


def test_backend_url_with_a_nul_fails_with_one_line(project: Path, veil_cli: Any) -> None:
    result = veil_cli("stack", "ls", "--backend", "file://state%00x")
    assert_one_error_line(result, "NUL")
    assert "unexpected" not in result.err


# --- selecting stack, backend and folder ----------------------------------------------------


def test_stack_from_environment(dev: Path, veil_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_STACK", "dev")
    assert veil_cli("config", "get", "app:region").out == "eu-west-1\n"


def test_stack_option_after_the_command(dev: Path, veil_cli: Any) -> None:
    assert veil_cli("config", "get", "app:region", "--stack", "dev").out == "eu-west-1\n"


def test_backend_option_wins_over_environment(
    project: Path, veil_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = project / "other-state"
    args = ("--backend", f"file://{other}")
    assert veil_cli(*args, "stack", "init", "dev", "--secrets-provider", FAST_URL).code == 0
    assert (other / "stacks" / "dev.json").is_file()
    assert veil_cli(*args, "stack", "ls").out.splitlines()[1].split()[0] == "dev"
    assert veil_cli("stack", "ls").out == ""  # VEIL_BACKEND_URL names another folder


def test_backend_from_environment(project: Path, veil_cli: Any) -> None:
    veil_cli("stack", "init", "dev", "--secrets-provider", FAST_URL)
    assert (project / "state" / "stacks" / "dev.json").is_file()


def test_cwd_option_names_the_project_folder(
    project: Path, veil_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project / "infra"
    folder.mkdir()
    veil_cli("-C", str(folder), "stack", "init", "dev", "--secrets-provider", FAST_URL)
    assert (folder / "veil.dev.json").is_file()
    assert veil_cli("-C", str(folder), "-s", "dev", "config", "set", "k", "v").code == 0
    assert veil_cli("-s", "dev", "config", "get", "k", "-C", str(folder)).out == "v\n"
    assert not (project / "veil.dev.json").exists()


# --- errors ---------------------------------------------------------------------------------


def test_wrong_passphrase_is_one_error_line(
    dev: Path, veil_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_PASSPHRASE", "not the passphrase")
    result = veil_cli("-s", "dev", "config", "get", "db:password")
    assert_one_error_line(result, "passphrase does not open")


def test_unknown_stack_is_one_error_line(project: Path, veil_cli: Any) -> None:
    result = veil_cli("-s", "nope", "stack", "output")
    assert_one_error_line(result, "no config file veil.nope.json")
    assert result.code == 3


def test_missing_key_is_one_error_line(dev: Path, veil_cli: Any) -> None:
    assert_one_error_line(veil_cli("-s", "dev", "config", "get", "nope"), "'nope'")


def test_corrupt_state_file_is_one_error_line(dev: Path, veil_cli: Any) -> None:
    (dev / "state" / "stacks" / "dev.json").write_text('{"veil_state": 1, "trunc')
    assert_one_error_line(veil_cli("-s", "dev", "stack", "output"), "not a valid veil state")


def test_corrupt_config_file_is_one_error_line(dev: Path, veil_cli: Any) -> None:
    (dev / "veil.dev.json").write_text("{not json")
    assert_one_error_line(veil_cli("-s", "dev", "config", "ls"), "not valid JSON")


def test_unknown_provider_scheme_is_one_error_line(project: Path, veil_cli: Any) -> None:
    result = veil_cli("stack", "init", "dev", "--secrets-provider", "nosuch://key")
    assert_one_error_line(result, "nosuch://")
    assert not (project / "veil.dev.json").exists()


def test_no_stack_selected_is_one_error_line(project: Path, veil_cli: Any) -> None:
    result = veil_cli("config", "ls")
    assert_one_error_line(result, "no stack selected")
    assert result.code == 2


def test_usage_error_is_one_error_line(project: Path, veil_cli: Any) -> None:
    result = veil_cli("config", "set")
    assert_one_error_line(result, "required", "--help")
    assert result.code == 2


def test_unknown_command_is_one_error_line(project: Path, veil_cli: Any) -> None:
    assert_one_error_line(veil_cli("frobnicate"), "invalid choice")


def test_error_lines_show_no_secret(
    dev: Path, veil_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = json.loads((dev / "veil.dev.json").read_text())
    doc["config"]["moved"] = doc["config"]["db:password"]
    (dev / "veil.dev.json").write_text(json.dumps(doc))
    result = veil_cli("-s", "dev", "config", "ls", "--show-secrets")
    assert_one_error_line(result, "'moved'")
    assert DB_PASSWORD not in result.err


# --- the real command, in a subprocess ------------------------------------------------------


def _veil_script() -> list[str]:
    script = Path(sys.executable).with_name("veil")
    return [str(script)] if script.exists() else [sys.executable, "-m", "veil.cli"]


def _run(project: Path, *argv: str, stdin: str = "", **env: str) -> Result:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    environ.update(
        VEIL_BACKEND_URL=f"file://{project / 'state'}", VEIL_INSECURE_WEAK_KDF="1", **env
    )
    proc = subprocess.run(
        [*_veil_script(), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=project,
        env=environ,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_console_script_session(tmp_path: Path) -> None:
    env = {"VEIL_PASSPHRASE": PASSPHRASE, "VEIL_STACK": "dev"}
    init = _run(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL, **env)
    assert init.code == 0, init.err
    assert (
        _run(tmp_path, "config", "set", "db:password", "--secret", stdin=DB_PASSWORD, **env).code
        == 0
    )
    listed = _run(tmp_path, "config", "ls", **env)
    assert listed.code == 0
    assert "[secret]" in listed.out
    assert DB_PASSWORD not in listed.out
    shown = _run(tmp_path, "config", "get", "db:password", "--show-secrets", **env)
    assert shown.out == DB_PASSWORD + "\n"
    assert DB_PASSWORD.encode() not in (tmp_path / "veil.dev.json").read_bytes()


def test_console_script_without_passphrase_and_terminal_fails_cleanly(tmp_path: Path) -> None:
    env = {"VEIL_PASSPHRASE": PASSPHRASE}
    assert _run(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL, **env).code == 0
    result = _run(tmp_path, "-s", "dev", "config", "ls")  # stdin is a pipe, not a tty
    assert_one_error_line(result, "VEIL_PASSPHRASE")


def test_console_script_wrong_passphrase_fails_cleanly(tmp_path: Path) -> None:
    env = {"VEIL_PASSPHRASE": PASSPHRASE}
    assert _run(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL, **env).code == 0
    result = _run(tmp_path, "-s", "dev", "config", "ls", VEIL_PASSPHRASE="wrong")
    assert_one_error_line(result, "passphrase does not open")


def test_module_run_import_from_stdin(tmp_path: Path) -> None:
    env = {"VEIL_PASSPHRASE": PASSPHRASE, "VEIL_STACK": "dev"}
    _run(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL, **env)
    with Stack.open(
        "dev",
        backend=f"file://{tmp_path / 'state'}",
        project_dir=tmp_path,
        secrets_provider=PassphraseProvider(passphrase=PASSPHRASE, insecure_weak_kdf=True),
    ) as stack:
        stack.export("token", Secret(TOKEN))
        stack.save()
    exported = _run(tmp_path, "stack", "export", **env).out
    imported = _run(tmp_path, "stack", "import", stdin=exported, **env)
    assert imported.code == 0, imported.err
    assert "Imported the export into stack 'dev'" in imported.out
    assert _run(tmp_path, "stack", "output", "token", **env).out == "[secret]\n"


def test_config_set_of_a_credential_shaped_plain_value_warns_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEIL_PASSPHRASE", "cli-warn-pass")
    monkeypatch.setenv("VEIL_STACK", "dev")
    monkeypatch.delenv("VEIL_STRICT", raising=False)
    assert main(["stack", "init", "dev"]) == 0
    capsys.readouterr()
    assert main(["config", "set", "db:url", "postgres://app:cli-pw-77@db/app"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("veil: warning: config value for 'db:url' is a URL with a password")
    assert err.count("\n") == 1
    assert "cli-pw-77" not in err


def test_config_set_secret_on_the_command_line_warns_about_shell_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEIL_PASSPHRASE", "cli-history-pass")
    monkeypatch.setenv("VEIL_STACK", "dev")
    assert main(["stack", "init", "dev"]) == 0
    capsys.readouterr()
    assert main(["config", "set", "db:pw", "typed-in-argv-1", "--secret"]) == 0
    err = capsys.readouterr().err
    assert "stays in the shell's history" in err
    assert "typed-in-argv-1" not in err
    monkeypatch.setattr("sys.stdin", io.StringIO("piped-secret-2\n"))
    assert main(["config", "set", "db:pw2", "--secret"]) == 0
    assert capsys.readouterr().err == ""
