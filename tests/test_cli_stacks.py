# mypy: disable-error-code="arg-type"
# (the tests pass the environment as **ENV: mypy cannot tell it holds no "home"/"timeout")
"""``veil stack init | ls | select | rm | output`` and the project folder, through the
real console script in temporary projects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import veil
from cli_support import (
    DB_PASSWORD,
    FAST_URL,
    PASSPHRASE,
    TOKEN,
    assert_one_error_line,
    call,
    environment,
    run,
    veil_script,
)
from veil import Secret, Stack
from veil.providers import PassphraseProvider
from veil.state import FileStore

ENV = {"VEIL_PASSPHRASE": PASSPHRASE}


def _open(project: Path, name: str = "dev") -> Stack:
    return Stack.open(
        name,
        backend=FileStore(project / ".veil"),
        project_dir=project,
        secrets_provider=PassphraseProvider(passphrase=PASSPHRASE, insecure_weak_kdf=True),
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stack 'dev' (passphrase) with config values and outputs; tests only read it."""
    project = tmp_path_factory.mktemp("shared")
    init = run(project, "stack", "init", "dev", "--secrets-provider", FAST_URL, **ENV)
    assert init.code == 0, init
    assert call(project, "-s", "dev", "config", "set", "app:region", "eu-west-1", **ENV).code == 0
    secret = call(project, "-s", "dev", "config", "set", "db:password", "--secret",
                 stdin=DB_PASSWORD, **ENV)  # fmt: skip
    assert secret.code == 0, secret
    with _open(project) as stack:
        stack.export("region", "eu-west-1")
        stack.export("token", Secret(TOKEN))
        stack.export("db", {"host": "db.internal", "password": veil.secret(DB_PASSWORD)})
        stack.export("bucket-name", "it's a bucket")
        stack.export("2nd", 2)
        stack.save()
    return project


# --- init -----------------------------------------------------------------------------


def test_init_prints_the_full_provider_url_and_where_things_are(tmp_path: Path) -> None:
    result = run(tmp_path, "stack", "init", "dev", "--secrets-provider", "file://keys/dev.key")
    assert result.code == 0, result
    assert "secrets provider: file://keys/dev.key" in result.out
    assert f"backend:          file://{tmp_path / '.veil'}" in result.out
    assert f"config:           {tmp_path / 'veil.dev.json'}" in result.out
    settings = json.loads((tmp_path / "veil.dev.json").read_text())["protection"]["recipients"]
    assert settings[0]["settings"]["path"] == "keys/dev.key"  # as written, not expanded
    assert (tmp_path / "keys" / "dev.key").is_file()


def test_init_with_an_age_recipient_then_secrets_open_with_the_identity(tmp_path: Path) -> None:
    pyrage = pytest.importorskip("pyrage")
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "age.txt").write_text(str(identity) + "\n")
    (tmp_path / "age.txt").chmod(0o600)
    env = {"VEIL_AGE_IDENTITY": str(tmp_path / "age.txt")}
    url = f"age://{identity.to_public()}"
    assert call(tmp_path, "stack", "init", "dev", "--secrets-provider", url, **env).code == 0
    assert (
        call(tmp_path, "-s", "dev", "config", "set", "k", "--secret", stdin="v-age", **env).code
        == 0
    )
    shown = call(tmp_path, "-s", "dev", "config", "get", "k", "--show-secrets", **env)
    assert shown.out == "v-age\n"
    other = pyrage.x25519.Identity.generate()
    (tmp_path / "other.txt").write_text(str(other) + "\n")
    (tmp_path / "other.txt").chmod(0o600)
    wrong = run(
        tmp_path, "-s", "dev", "config", "get", "k", VEIL_AGE_IDENTITY=str(tmp_path / "other.txt")
    )
    assert_one_error_line(wrong, "age", code=1)


def test_init_twice_fails_with_one_line(shared: Path) -> None:
    result = call(shared, "stack", "init", "dev", "--secrets-provider", FAST_URL, **ENV)
    assert_one_error_line(result, "already exists", code=1)


# --- ls and select --------------------------------------------------------------------


def test_ls_shows_serial_last_update_and_provider_and_marks_the_selected_stack(
    tmp_path: Path,
) -> None:
    for name in ("dev", "prod"):
        assert (
            call(tmp_path, "stack", "init", name, "--secrets-provider", FAST_URL, **ENV).code == 0
        )
    selected = run(tmp_path, "stack", "select", "prod")
    assert (selected.code, selected.out) == (0, f"Selected stack 'prod' for {tmp_path}\n")
    listed = run(tmp_path, "stack", "ls")  # no key needed
    lines = listed.out.splitlines()
    assert lines[0].split() == ["NAME", "SERIAL", "LAST", "UPDATE", "SECRETS", "PROVIDERS"]
    assert lines[1].split()[:2] == ["dev", "1"]
    assert lines[2].split()[:2] == ["prod*", "1"]
    assert lines[2].split()[3] == "passphrase://"
    rows = json.loads(call(tmp_path, "stack", "ls", "--json").out)
    assert [(r["name"], r["current"], r["serial"]) for r in rows] == [
        ("dev", False, 1),
        ("prod", True, 1),
    ]
    assert rows[0]["last_update"].startswith("20")
    # The selected stack is the default; VEIL_STACK and --stack win over it.
    assert call(tmp_path, "config", "set", "which", "p", **ENV).code == 0
    assert "which" in json.loads((tmp_path / "veil.prod.json").read_text())["config"]
    assert call(tmp_path, "config", "set", "which", "d", VEIL_STACK="dev", **ENV).code == 0
    assert call(tmp_path, "config", "get", "which", "--stack", "dev", **ENV).out == "d\n"
    marked = call(tmp_path, "stack", "ls", VEIL_STACK="dev").out.splitlines()
    assert marked[1].startswith("dev*")


def test_select_of_a_missing_stack_is_not_found(tmp_path: Path) -> None:
    assert_one_error_line(call(tmp_path, "stack", "select", "nope"), "no stack 'nope'", code=3)


def test_no_stack_selected_is_a_usage_error(tmp_path: Path) -> None:
    assert_one_error_line(call(tmp_path, "config", "ls"), "veil stack select", code=2)


# --- rm -------------------------------------------------------------------------------


def test_rm_refuses_without_yes_when_stdin_is_not_a_terminal(tmp_path: Path) -> None:
    assert call(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL, **ENV).code == 0
    result = run(tmp_path, "stack", "rm", "dev")
    assert_one_error_line(result, "--yes", code=2)
    assert (tmp_path / ".veil" / "stacks" / "dev.json").is_file()
    removed = call(tmp_path, "stack", "rm", "dev", "--yes")
    assert removed.code == 0, removed
    assert "kept the config file" in removed.out
    assert not (tmp_path / ".veil" / "stacks" / "dev.json").exists()
    assert not (tmp_path / ".veil" / "history" / "dev").exists()
    assert (tmp_path / "veil.dev.json").is_file()
    assert call(tmp_path, "stack", "ls").out == ""
    assert_one_error_line(call(tmp_path, "stack", "rm", "dev", "--yes"), "no stack", code=3)


def test_rm_remove_config_removes_the_config_file_and_the_lock(tmp_path: Path) -> None:
    assert call(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL, **ENV).code == 0
    FileStore(tmp_path / ".veil").lock("dev", owner="someone-else")
    removed = call(tmp_path, "stack", "rm", "dev", "--yes", "--remove-config")
    assert removed.code == 0, removed
    assert "it was locked by someone-else" in removed.out
    assert not (tmp_path / "veil.dev.json").exists()
    assert not (tmp_path / ".veil" / "locks" / "dev.lock").exists()


# --- output ---------------------------------------------------------------------------


def test_output_shell_prints_exports_without_secrets(shared: Path) -> None:
    result = run(shared, "-s", "dev", "stack", "output", "--shell", **ENV)
    assert result.code == 0, result
    assert result.out.splitlines() == [
        "export _2nd=2",
        "export bucket_name='it'\"'\"'s a bucket'",
        "export region=eu-west-1",
    ]
    assert TOKEN not in result.out + result.err
    assert result.err == (
        "veil: warning: left out 2 secret output(s) (db, token); add --show-secrets to "
        "include them\n"
    )


def test_output_shell_with_show_secrets_evaluates_to_the_values(shared: Path) -> None:
    result = call(shared, "-s", "dev", "stack", "output", "--shell", "--show-secrets", **ENV)
    assert result.code == 0, result
    script = result.out + 'printf "%s\\n" "$token" "$bucket_name" "$db"\n'
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    lines = shell.stdout.splitlines()
    assert lines[:2] == [TOKEN, "it's a bucket"]
    assert json.loads(lines[2]) == {"host": "db.internal", "password": DB_PASSWORD}


def test_output_json_into_a_closed_pipe_exits_quietly(shared: Path) -> None:
    env = environment(shared / ".home", **ENV)
    command = " ".join(veil_script()) + " -s dev stack output --json"
    for reader in ("head -1", "true"):
        proc = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command} | {reader}"],
            cwd=shared,
            env=env,
            capture_output=True,
            text=True,
        )
        assert (proc.returncode, proc.stderr) == (0, ""), (reader, proc)


def test_output_masks_secrets_and_an_unknown_name_is_not_found(shared: Path) -> None:
    table = call(shared, "-s", "dev", "stack", "output", **ENV)
    assert "[secret]" in table.out
    assert TOKEN not in table.out
    missing = call(shared, "-s", "dev", "stack", "output", "nope", **ENV)
    assert_one_error_line(missing, "no output named 'nope'", code=3)


# --- the project folder ---------------------------------------------------------------


def test_commands_find_the_config_file_in_a_parent_folder(shared: Path) -> None:
    deeper = shared / "src" / "deeper"
    deeper.mkdir(parents=True, exist_ok=True)
    result = run(deeper, "-s", "dev", "config", "get", "app:region", home=shared / ".home", **ENV)
    assert (result.code, result.out) == (0, "eu-west-1\n")
    assert not (deeper / "veil.dev.json").exists()
    assert not (deeper / ".veil").exists()


def test_without_a_config_file_reads_say_where_they_looked_and_set_creates_nothing(
    tmp_path: Path,
) -> None:
    read = call(tmp_path, "-s", "dev", "config", "ls", **ENV)
    assert_one_error_line(
        read, f"no config file veil.dev.json in {tmp_path} or any folder above", code=3
    )
    write = call(tmp_path, "-s", "dev", "config", "set", "k", "v", **ENV)
    assert_one_error_line(write, "veil stack init dev", code=3)
    assert list(tmp_path.glob("veil.*.json")) == []


# --- mistakes -------------------------------------------------------------------------


def test_an_empty_secret_from_stdin_is_refused_unless_allowed(shared: Path) -> None:
    before = (shared / "veil.dev.json").read_bytes()
    refused = call(shared, "-s", "dev", "config", "set", "db:new", "--secret", stdin="", **ENV)
    assert_one_error_line(refused, "empty", "--allow-empty", code=2)
    assert (shared / "veil.dev.json").read_bytes() == before
    argv = call(shared, "-s", "dev", "config", "set", "db:new", "", "--secret", **ENV)
    assert_one_error_line(argv, "empty", code=2)


def test_allow_empty_sets_an_empty_secret(tmp_path: Path) -> None:
    assert call(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL, **ENV).code == 0
    args = ("-s", "dev", "config", "set", "db:empty", "--secret", "--allow-empty")
    assert call(tmp_path, *args, stdin="\n", **ENV).code == 0
    shown = call(
        tmp_path, "-s", "dev", "config", "get", "db:empty", "--json", "--show-secrets", **ENV
    )
    assert shown.out == '""\n'


# --- migrating from Pulumi ------------------------------------------------------------

PULUMI_PASSPHRASE = "pulumi-pass-phrase"


@pytest.fixture(scope="module")
def pulumi_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from veil.interop.pulumi import PulumiStackConfig

    config = PulumiStackConfig.loads("", PULUMI_PASSPHRASE)
    config.set("proj:region", "eu-west-1")
    config.set("proj:dbPassword", "pulumi-db-secret-1", secret=True)
    config.set(
        "proj:nested",
        {"user": "admin", "password": Secret("nested-pw-2"), "hosts": ["a", Secret("hs-3")]},
    )
    path = tmp_path_factory.mktemp("pulumi") / "Pulumi.dev.yaml"
    config.save(path)
    return path


def test_init_from_pulumi_copies_secure_values_nested_ones_too(
    tmp_path: Path, pulumi_file: Path
) -> None:
    result = run(
        tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL,
        "--from-pulumi", str(pulumi_file), PULUMI_CONFIG_PASSPHRASE=PULUMI_PASSPHRASE, **ENV,
    )  # fmt: skip
    assert result.code == 0, result
    assert "copied 3 config values (2 secure)" in result.out
    values = json.loads(call(tmp_path, "-s", "dev", "config", "ls", "--json", **ENV).out)
    assert values == {
        "proj:region": "eu-west-1",
        "proj:dbPassword": "[secret]",
        "proj:nested": {"user": "admin", "password": "[secret]", "hosts": ["a", "[secret]"]},
    }
    shown = call(tmp_path, "-s", "dev", "config", "ls", "--json", "--show-secrets", **ENV)
    assert json.loads(shown.out)["proj:nested"]["hosts"] == ["a", "hs-3"]
    text = (tmp_path / "veil.dev.json").read_text()
    for plain in ("pulumi-db-secret-1", "nested-pw-2", "hs-3"):
        assert plain not in text
    assert json.loads(text)["config"]["proj:nested"]["user"] == "admin"  # readable


@pytest.mark.parametrize("problem", ["wrong passphrase", "no passphrase", "bad file"])
def test_init_from_pulumi_leaves_nothing_behind_on_failure(
    tmp_path: Path, pulumi_file: Path, problem: str
) -> None:
    source = pulumi_file
    env = dict(ENV, PULUMI_CONFIG_PASSPHRASE=PULUMI_PASSPHRASE)
    if problem == "wrong passphrase":
        env["PULUMI_CONFIG_PASSPHRASE"] = "not-it"
    elif problem == "no passphrase":
        del env["PULUMI_CONFIG_PASSPHRASE"]
    else:
        source = tmp_path / "Pulumi.bad.yaml"
        source.write_text("config:\n  proj:x: [unclosed\n")
    result = call(tmp_path, "stack", "init", "dev", "--secrets-provider", FAST_URL,
                 "--from-pulumi", str(source), **env)  # fmt: skip
    assert_one_error_line(result, code=1)
    assert not (tmp_path / "veil.dev.json").exists()
    assert not (tmp_path / ".veil" / "stacks" / "dev.json").exists()
