"""Nested config values (Pulumi's --path): a secret leaf sealed on its own, the rest
readable, each leaf bound to its path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import veil
from veil import Secret, Stack
from veil.config import parse_path, split_key_path
from veil.providers import LocalKeyProvider


@pytest.fixture
def env(tmp_path: Path) -> tuple[str, Path, Path]:
    project = tmp_path / "project"
    project.mkdir()
    return f"file://{tmp_path / 'state'}", project, tmp_path / "dev.key"


def _create(env: tuple[str, Path, Path]) -> Stack:
    backend, project, key = env
    return Stack.create(
        "dev", backend=backend, secrets_provider=LocalKeyProvider(key), project_dir=project
    )


def _open(env: tuple[str, Path, Path]) -> Stack:
    backend, project, key = env
    return Stack.open(
        "dev", backend=backend, secrets_provider=LocalKeyProvider(key), project_dir=project
    )


def _file(env: tuple[str, Path, Path]) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((env[1] / "veil.dev.json").read_text())
    return loaded


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("hosts[0]", ["hosts", 0]),
        ("db.password", ["db", "password"]),
        ('["a.b"].c', ["a.b", "c"]),
        ("a[2][1].x", ["a", 2, 1, "x"]),
        ("app:db.hosts", ["app:db", "hosts"]),
    ],
)
def test_paths_parse_as_pulumi_writes_them(text: str, steps: list[object]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize("text", ["", ".a", "a..b", "a[x]", "a[", 'a["x]', "a b", "a.[0]"])
def test_a_malformed_path_is_a_config_error_quoting_it(text: str) -> None:
    with pytest.raises(veil.ConfigError) as info:
        parse_path(text)
    if text:
        assert repr(text) in str(info.value)


def test_the_key_is_the_first_segment() -> None:
    assert split_key_path("app:cfg.hosts[0]") == ("app:cfg", ["hosts", 0])


def test_a_secret_leaf_is_sealed_alone_and_the_rest_stays_readable(
    env: tuple[str, Path, Path],
) -> None:
    with _create(env) as stack:
        stack.config.set("app", "db.internal", path="hosts[0]")
        stack.config.set("app", "pw-nested-0123", path="db.password", secret=True)
        stack.config.set("app", 5432, path="db.port")
        stack.save()
    stored = _file(env)["config"]
    assert isinstance(stored, dict)
    app = stored["app"]
    assert app["hosts"] == ["db.internal"]
    assert app["db"]["port"] == 5432
    assert set(app["db"]["password"]) == {"secure"}
    assert b"pw-nested-0123" not in (env[1] / "veil.dev.json").read_bytes()
    with _open(env) as stack:
        value = stack.config.value("app")
        assert value["db"]["password"] == Secret("pw-nested-0123")
        assert value["hosts"] == ["db.internal"]
        assert stack.config.is_secret("app")
        out = stack.config.require("app")
        assert veil.is_secret(out)
        assert veil.reveal(out)["db"]["password"] == "pw-nested-0123"


def test_a_sealed_leaf_moved_to_another_path_does_not_open(env: tuple[str, Path, Path]) -> None:
    with _create(env) as stack:
        stack.config.set("app", "pw-nested-0123", path="db.password", secret=True)
        stack.config.set("app", "x", path="db.user")
        stack.save()
    doc = _file(env)
    config = doc["config"]
    assert isinstance(config, dict)
    config["app"]["db"]["user"] = config["app"]["db"]["password"]
    (env[1] / "veil.dev.json").write_text(json.dumps(doc))
    with _open(env) as stack, pytest.raises(veil.DecryptionError, match=r"app\.db\.user"):
        stack.config.value("app")


def test_rotation_reseals_nested_leaves(env: tuple[str, Path, Path]) -> None:
    with _create(env) as stack:
        stack.config.set("app", "pw-nested-0123", path="db.password", secret=True)
        stack.save()
        before = json.dumps(_file(env)["config"])
        stack.rotate_key()
        stack.save()
    assert json.dumps(_file(env)["config"]) != before
    with _open(env) as stack:
        assert stack.config.value("app")["db"]["password"] == Secret("pw-nested-0123")


def test_removing_a_list_item_keeps_later_secret_leaves_readable(
    env: tuple[str, Path, Path],
) -> None:
    with _create(env) as stack:
        for i in range(3):
            stack.config.set("app", f"token-{i}-abcdef", path=f"tokens[{i}]", secret=True)
        stack.config.remove("app", path="tokens[0]")
        stack.save()
    with _open(env) as stack:
        assert stack.config.value("app")["tokens"] == [
            Secret("token-1-abcdef"),
            Secret("token-2-abcdef"),
        ]
        with pytest.raises(veil.ConfigMissingError):
            stack.config.remove("app", path="tokens[5]")


def test_an_older_nested_secret_copied_back_is_refused(env: tuple[str, Path, Path]) -> None:
    with _create(env) as stack:
        stack.config.set("app", "pw-old-0123456", path="db.password", secret=True)
        stack.save()
    old = _file(env)["config"]
    with _open(env) as stack:
        stack.config.set("app", "pw-new-0123456", path="db.password", secret=True)
        stack.save()
    doc = _file(env)
    doc["config"] = old
    (env[1] / "veil.dev.json").write_text(json.dumps(doc))
    with pytest.raises(veil.ConfigStateMismatchError, match="older value"):
        _open(env)


def test_paths_into_values_of_another_shape_are_refused(env: tuple[str, Path, Path]) -> None:
    with _create(env) as stack:
        stack.config.set("whole", "sealed-as-a-whole", secret=True)
        with pytest.raises(veil.ConfigError, match="stored secure as a whole"):
            stack.config.set("whole", "x", path="a")
        stack.config.set("app", "x", path="name")
        with pytest.raises(veil.ConfigError, match="is not a list"):
            stack.config.set("app", "y", path="name[0]")
        with pytest.raises(veil.ConfigError, match="past the end"):
            stack.config.set("app", "y", path="hosts[3]")
