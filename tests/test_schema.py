"""Secret by declaration: typed classes declare secret fields, mark_secret marks paths,
the schema registry and its entry points."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import typing
import warnings
import weakref
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypedDict

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import veil
from veil import LeakWarning, Output, Secret, SecretPathError, UnknownSchemaError
from veil.providers import LocalKeyProvider
from veil.state import dump_document, dumps, loads

PROVIDER_KEY = Path(tempfile.mkdtemp(prefix="veil-schema-")) / "stack.key"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> LocalKeyProvider:
    return LocalKeyProvider(tmp_path_factory.mktemp("schema") / "stack.key")


# --- typed classes used below (module level: forward references resolve here) -----------


@dataclasses.dataclass(frozen=True, slots=True)
class Database:
    host: str
    password: Annotated[str, veil.Secret]
    admin_key: str = dataclasses.field(default="k-admin", metadata={"veil.secret": True})


@attrs.frozen
class User:
    name: str
    token: str = veil.secret_field(default="tok")


@attrs.define
class Cluster:
    name: str
    db: Database
    users: list[User]
    _api_key: Annotated[str, veil.Secret] = "api"
    later: Later | None = None


@dataclasses.dataclass
class Later:
    """Defined after the class that names it: a forward reference."""

    pin: Annotated[int, veil.Secret]


class Endpoint(NamedTuple):
    url: str
    secret: Annotated[str, veil.Secret]


class Credential(TypedDict):
    user: str
    token: Annotated[str, veil.Secret]


@dataclasses.dataclass
class Account:
    name: str
    credentials: list[Credential]
    by_region: dict[str, Credential]


class InstanceArgs:
    """Shaped like a class decorated with ``@pulumi.input_type``."""

    _pulumi_input_type = True

    def __init__(self, name: str, password: Annotated[str, veil.Secret]) -> None:
        self.name = name
        self.password = password


T = typing.TypeVar("T")
# Like pulumi.Input: a forward reference that resolves only in the library's own module.
PulumiInput = typing.Union[T, typing.Awaitable[T], "OutputOfElsewhere[T]"]  # type: ignore[name-defined]  # noqa: F821


class GeneratedArgs:
    """Shaped like Pulumi's generated input classes: hints on __init__ and getters,
    with an Input alias that get_type_hints cannot resolve here."""

    _pulumi_input_type = True

    def __init__(
        self,
        *,
        host: PulumiInput[str],
        password: Annotated[PulumiInput[str], veil.Secret],
        token: PulumiInput[str],
    ) -> None:
        self.host = host
        self.password = password
        self.token = token

    @property
    def token_(self) -> str:  # not a field: a property of another name
        return "x"


class GeneratedArgsWithGetter:
    _pulumi_input_type = True

    def __init__(self, *, token: PulumiInput[str], host: PulumiInput[str]) -> None:
        self.__dict__["token"] = token
        self.__dict__["host"] = host

    @property
    def token(self) -> Annotated[PulumiInput[str] | None, veil.Secret]:
        return typing.cast(str, self.__dict__["token"])


def _cluster() -> Cluster:
    return Cluster(
        "c1",
        Database("db.internal", "db-pw"),
        [User("ann", token="t-ann"), User("bob", token="t-bob")],
        later=Later(1234),
    )


# --- typed classes: Outputs ----------------------------------------------------------------


def test_from_input_of_instance_with_declared_field_is_secret() -> None:
    assert veil.is_secret(Output.from_input(Database("h", "pw")))
    assert veil.is_secret(Output.from_input(User("ann")))
    assert veil.is_secret(Output.from_input(Endpoint("u", "s")))
    assert veil.is_secret(Output.from_input(InstanceArgs("n", "pw")))


def test_from_input_of_instance_without_declarations_is_not_secret() -> None:
    @dataclasses.dataclass
    class Plain:
        a: str

    assert not veil.is_secret(Output.from_input(Plain("x")))


def test_from_input_finds_declared_instance_nested_in_containers() -> None:
    assert veil.is_secret(Output.from_input({"dbs": [Database("h", "pw")]}))


def test_lifting_a_declared_field_gives_a_secret_output() -> None:
    o = Output.from_input(_cluster())
    assert veil.is_secret(o.db.password)
    assert veil.reveal(o.db.password) == "db-pw"


def test_lifting_a_declared_field_of_a_non_secret_output_is_secret() -> None:
    # An awaitable's result is not walked: only the lifted field's declaration counts.
    async def make() -> Database:
        return Database("h", "pw")

    async def main() -> tuple[bool, bool]:
        o = Output(set(), make(), _true())
        return await o.password.is_secret(), await o.host.is_secret()

    assert asyncio.run(main()) == (True, False)


async def _true() -> bool:
    return True


def test_apply_returning_declared_instance_is_secret() -> None:
    o = Output.from_input(1).apply(lambda _: [Database("h", "pw")])
    assert veil.is_secret(o)


def test_hints_are_resolved_once_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass
    class Counted:
        pw: Annotated[str, veil.Secret]

    calls: list[object] = []
    real = typing.get_type_hints

    def counting(obj: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)
    for i in range(50):
        assert veil.is_secret(Output.from_input(Counted(str(i))))
    assert calls.count(Counted) == 1


def test_the_class_cache_lets_classes_be_collected() -> None:
    @dataclasses.dataclass
    class Temporary:
        pw: Annotated[str, veil.Secret]

    assert veil.is_secret(Output.from_input(Temporary("x")))
    ref = weakref.ref(Temporary)
    del Temporary
    gc.collect()
    assert ref() is None


def test_forward_reference_resolves_against_the_class_module() -> None:
    tree = veil.mark_secret({"c": _cluster()}, "nothing")
    got = _stored(tree)["c"]["later"]
    assert set(got["pin"]) == {"$secret"}


def test_unresolvable_annotation_mentioning_secret_is_read_as_declared() -> None:
    @dataclasses.dataclass
    class Local:
        pw: Annotated[Missing, veil.Secret]  # type: ignore[name-defined]  # noqa: F821
        other: Missing  # type: ignore[name-defined]  # noqa: F821

    stored = _stored({"x": Local("a", "b")})["x"]
    assert set(stored["pw"]) == {"$secret"}
    assert stored["other"] == "b"


# --- typed classes: state ------------------------------------------------------------------


def _stored(tree: Any, **options: Any) -> Any:
    provider = LocalKeyProvider(PROVIDER_KEY)
    return json.loads(dumps(tree, provider=provider, stack="dev", **options))["tree"]


def _is_sealed(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"$secret"}


def test_instance_is_stored_as_mapping_with_declared_fields_sealed() -> None:
    stored = _stored({"c": _cluster()})["c"]
    assert stored["name"] == "c1"
    assert stored["db"]["host"] == "db.internal"
    assert _is_sealed(stored["db"]["password"])
    assert _is_sealed(stored["db"]["admin_key"])
    assert [u["name"] for u in stored["users"]] == ["ann", "bob"]
    assert all(_is_sealed(u["token"]) for u in stored["users"])
    assert _is_sealed(stored["api_key"])  # attrs: the field's public name
    assert _is_sealed(stored["later"]["pin"])


def test_instance_round_trips_with_exactly_declared_fields_secret(
    provider: LocalKeyProvider,
) -> None:
    back = loads(dumps({"c": _cluster()}, provider=provider, stack="dev"), provider=provider)
    c = back["c"]
    secrets = sorted(_secret_paths(c))
    assert secrets == [
        "api_key",
        "db.admin_key",
        "db.password",
        "later.pin",
        "users[0].token",
        "users[1].token",
    ]
    assert c["db"]["password"].reveal() == "db-pw"
    assert c["later"]["pin"].reveal() == 1234


def _secret_paths(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, Secret):
        return [prefix]
    if isinstance(tree, dict):
        return [
            p for k, v in tree.items() for p in _secret_paths(v, f"{prefix}.{k}" if prefix else k)
        ]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in _secret_paths(v, f"{prefix}[{i}]")]
    return []


def test_namedtuple_and_pulumi_input_class_are_stored_as_mappings() -> None:
    stored = _stored({"e": Endpoint("https://x", "s3cr3t"), "i": InstanceArgs("n", "pw")})
    assert stored["e"]["url"] == "https://x"
    assert _is_sealed(stored["e"]["secret"])
    assert stored["i"]["name"] == "n"
    assert _is_sealed(stored["i"]["password"])


def test_typeddict_declarations_apply_through_a_declared_field() -> None:
    account = Account(
        "acme",
        [{"user": "u1", "token": "t1"}],
        {"eu": {"user": "u2", "token": "t2"}},
    )
    stored = _stored({"a": account})["a"]
    assert stored["credentials"][0]["user"] == "u1"
    assert _is_sealed(stored["credentials"][0]["token"])
    assert stored["by_region"]["eu"]["user"] == "u2"
    assert _is_sealed(stored["by_region"]["eu"]["token"])


def test_frozen_and_slotted_instances_in_lists_at_depth() -> None:
    @attrs.frozen(slots=True)
    class Leaf:
        value: Annotated[str, veil.Secret]

    @dataclasses.dataclass(frozen=True, slots=True)
    class Branch:
        leaves: list[Leaf]
        children: list[Branch]

    tree = Branch([Leaf("a")], [Branch([Leaf("b"), Leaf("c")], [Branch([], [])])])
    stored = _stored({"t": tree})["t"]
    assert _is_sealed(stored["leaves"][0]["value"])
    assert all(_is_sealed(x["value"]) for x in stored["children"][0]["leaves"])
    assert stored["children"][0]["children"] == [{"leaves": [], "children": []}]


def test_secret_output_of_instance_is_sealed_whole(provider: LocalKeyProvider) -> None:
    o = Output.from_input(Database("h", "pw"))
    back = loads(dumps({"db": o}, provider=provider, stack="dev"), provider=provider)
    assert back["db"].reveal() == {"host": "h", "password": "pw", "admin_key": "k-admin"}


def test_dumps_async_resolves_outputs_inside_instances(provider: LocalKeyProvider) -> None:
    async def host() -> str:
        return "h"

    async def main() -> Any:
        tree = {"db": Database(Output.from_input(host()), "pw")}  # type: ignore[arg-type]
        return loads(
            await veil.state.dumps_async(tree, provider=provider, stack="dev"), provider=provider
        )

    back = asyncio.run(main())
    assert back["db"]["host"] == "h"
    assert back["db"]["password"].reveal() == "pw"


def test_stack_export_of_instance_seals_declared_fields(tmp_path: Path) -> None:
    from veil.providers import PassphraseProvider

    provider = PassphraseProvider(
        passphrase="correct horse battery staple",
        memory_cost=8,
        iterations=1,
        lanes=1,
        insecure_weak_kdf=True,
    )
    with veil.Stack.create(
        "dev",
        backend=f"file://{tmp_path / 'state'}",
        secrets_provider=provider,
        project_dir=tmp_path,
    ) as stack:
        stack.export("cluster", _cluster())
        stack.save()
        tree = stack.state_tree["outputs"]["cluster"]
    assert isinstance(tree["db"]["password"], Secret)
    assert tree["db"]["host"] == "db.internal"


def test_the_instance_itself_is_not_changed() -> None:
    c = _cluster()
    before = repr(c)
    _stored({"c": c})
    assert repr(c) == before
    assert c.db.password == "db-pw"


# --- mark_secret -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "elements"),
    [
        ("conn.password", ("conn", "password")),
        ("hosts[0]", ("hosts", 0)),
        ("hosts[-1]", ("hosts", -1)),
        ("users[*].token", ("users", "*", "token")),
        ("zones.*.apiKey", ("zones", "*", "apiKey")),
        ('tags["a.b"]', ("tags", "a.b")),
        ('["x y"][2]', ("x y", 2)),
        ("*", ("*",)),
        ("[3]", (3,)),
    ],
)
def test_paths_parse(path: str, elements: tuple[Any, ...]) -> None:
    from veil._declared import ANY, parse_path

    got = parse_path(path)
    assert tuple("*" if e is ANY else e for e in got) == elements


@pytest.mark.parametrize(
    "path",
    ["", ".a", "a.", "a..b", "a[", "a[x]", "a[*", 'a["x', 'a["x"', "a b", "a]", "a[0]b", "a.[0]"],
)
def test_malformed_path_is_a_typed_error_quoting_it(path: str) -> None:
    with pytest.raises(SecretPathError) as info:
        veil.mark_secret({"a": 1}, [path])
    assert isinstance(info.value, veil.VeilError)
    if path:
        assert repr(path) in str(info.value)


def test_mark_secret_marks_paths_and_leaves_the_argument_unchanged() -> None:
    value: dict[str, Any] = {
        "conn": {"host": "h", "password": "pw"},
        "hosts": ["a", "b", "c"],
        "users": [{"name": "ann", "token": "t1"}, {"name": "bob", "token": "t2"}],
        "zones": {"eu": {"apiKey": "k1", "id": 1}, "us": {"apiKey": "k2", "id": 2}},
    }
    before = copy.deepcopy(value)
    marked = veil.mark_secret(
        value, ["conn.password", "hosts[0]", "hosts[-1]", "users[*].token", "zones.*.apiKey"]
    )
    assert value == before
    assert sorted(_secret_paths(marked)) == [
        "conn.password",
        "hosts[0]",
        "hosts[2]",
        "users[0].token",
        "users[1].token",
        "zones.eu.apiKey",
        "zones.us.apiKey",
    ]
    assert marked["conn"]["host"] == "h"


def test_mark_secret_of_a_missing_path_marks_nothing() -> None:
    value = {"a": [1]}
    assert veil.mark_secret(value, ["b.c", "a[5]", "a[0].x"]) == value


def test_mark_secret_of_typed_instance_gives_a_copy() -> None:
    db = Database("h", "pw")
    marked = veil.mark_secret(db, ["host"])
    assert isinstance(marked, Database)
    assert isinstance(marked.host, Secret)
    assert db.host == "h"
    nt = veil.mark_secret(Endpoint("u", "s"), ["url"])
    assert isinstance(nt, Endpoint)
    assert isinstance(nt.url, Secret)


def test_mark_secret_of_an_output_gives_an_output() -> None:
    o = Output.from_input({"a": 1, "b": 2})
    marked = veil.mark_secret(o, ["a"])
    assert isinstance(marked, Output)
    assert veil.is_secret(marked)
    assert veil.reveal(marked) == {"a": 1, "b": 2}
    assert not veil.is_secret(veil.mark_secret(o, ["zzz"]))
    assert not veil.is_secret(o)


def test_mark_secret_of_an_unknown_output_is_secret() -> None:
    assert veil.is_secret(veil.mark_secret(Output.from_input(veil.UNKNOWN), ["a"]))


def test_mark_secret_of_an_output_inside_a_tree() -> None:
    marked = veil.mark_secret({"db": Output.from_input({"pw": "x"})}, ["db.pw"])
    assert isinstance(marked["db"], Output)
    assert veil.is_secret(marked["db"])


def test_mark_secret_with_nothing_to_mark_is_a_usage_error() -> None:
    with pytest.raises(veil.UsageError):
        veil.mark_secret({"a": 1})


def test_mark_secret_with_a_typeddict_type() -> None:
    marked = veil.mark_secret({"user": "u", "token": "t"}, type=Credential)
    assert isinstance(marked["token"], Secret)
    assert marked["user"] == "u"


# --- the registry ----------------------------------------------------------------------------


def test_registered_paths_apply_by_type_token() -> None:
    veil.register_secret_paths("test:index/db:Db", ["password", "replicas[*].password"])
    marked = veil.mark_secret(
        {"password": "a", "replicas": [{"password": "b", "host": "r"}]}, type="test:index/db:Db"
    )
    assert sorted(_secret_paths(marked)) == ["password", "replicas[0].password"]


def test_registering_a_token_again_adds_paths() -> None:
    veil.register_secret_paths("test:again", ["a"])
    veil.register_secret_paths("test:again", ["b"])
    assert veil.schema.registered_secret_paths("test:again") == ("a", "b")
    marked = veil.mark_secret({"a": 1, "b": 2, "c": 3}, type="test:again")
    assert sorted(_secret_paths(marked)) == ["a", "b"]


def test_registering_a_malformed_path_registers_nothing() -> None:
    with pytest.raises(SecretPathError, match=r"'x\.\.y'"):
        veil.register_secret_paths("test:bad", ["ok", "x..y"])
    with pytest.raises(UnknownSchemaError):
        veil.mark_secret({}, type="test:bad")


def test_unknown_type_token_is_a_typed_error() -> None:
    with pytest.raises(UnknownSchemaError, match="test:nothing-here"):
        veil.mark_secret({"a": 1}, type="test:nothing-here")


def test_entry_points_are_loaded_on_the_first_unknown_token(tmp_path: Path) -> None:
    (tmp_path / "acme_schemas.py").write_text(
        textwrap.dedent(
            """
            LOADED = []

            def schemas():
                LOADED.append(1)
                return {"acme:index:Db": ["password", "users[*].token"]}

            def broken():
                raise RuntimeError("boom")
            """
        )
    )
    dist = tmp_path / "acme_schemas-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-schemas\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[veil.secret_schemas]\nacme = acme_schemas:schemas\nbad = acme_schemas:broken\n"
    )
    script = textwrap.dedent(
        """
        import veil, acme_schemas
        veil.register_secret_paths("local:x", ["a"])
        veil.mark_secret({"a": 1}, type="local:x")
        assert acme_schemas.LOADED == [], "loaded before an unknown token was asked for"
        m = veil.mark_secret({"password": "p", "users": [{"token": "t"}]}, type="acme:index:Db")
        assert isinstance(m["password"], veil.Secret)
        assert isinstance(m["users"][0]["token"], veil.Secret)
        try:
            veil.mark_secret({}, type="acme:index:Other")
        except veil.UnknownSchemaError as exc:
            assert "bad = acme_schemas:broken" in str(exc), str(exc)
        else:
            raise AssertionError("no error")
        assert acme_schemas.LOADED == [1]
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_secret_field_keeps_other_metadata() -> None:
    @attrs.define
    class A:
        x: str = veil.secret_field(default="d", metadata={"doc": "a key"})

    f = attrs.fields(A).x
    assert f.metadata == {"doc": "a key", "veil.secret": True}
    assert f.default == "d"


# --- property: declared paths over random trees ---------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "a.b", "x y", "$secret", "*", "0", "é"])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.just("s"))
TREES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=20,
)
WILD = object()


def _relabel(tree: Any, counter: list[int]) -> Any:
    """Every string unique, so the leak guard has nothing to find."""
    if isinstance(tree, dict):
        return {k: _relabel(v, counter) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_relabel(v, counter) for v in tree]
    if isinstance(tree, str):
        counter[0] += 1
        return f"s{counter[0]}"
    return tree


def _nodes(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], int | None]]:
    """(path, length of the list it is in, if any) of every node below the root."""
    out: list[tuple[tuple[Any, ...], int | None]] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.append(((*path, k), None))
            out.extend(_nodes(v, (*path, k)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.append(((*path, (i, len(tree))), None))
            out.extend(_nodes(v, (*path, (i, len(tree)))))
    return out


def _text(pattern: tuple[Any, ...], draw: Any) -> str:
    parts = []
    for n, e in enumerate(pattern):
        if e is WILD:
            parts.append(draw(st.sampled_from(["[*]", "*" if n == 0 else ".*"])))
        elif isinstance(e, int):
            parts.append(f"[{e}]")
        elif e.isidentifier() and draw(st.booleans()):
            parts.append(e if n == 0 else "." + e)
        else:
            parts.append(f"[{json.dumps(e)}]")
    return "".join(parts)


@st.composite
def trees_and_paths(draw: Any) -> tuple[Any, list[tuple[Any, ...]], list[str]]:
    tree = _relabel(draw(TREES), [0])
    nodes = [p for p, _ in _nodes(tree)]
    patterns: list[tuple[Any, ...]] = []
    texts: list[str] = []
    for path in draw(st.lists(st.sampled_from(nodes), max_size=4)) if nodes else []:
        pattern: list[Any] = []
        for e in path:
            if draw(st.integers(0, 3)) == 0:
                pattern.append(WILD)
            elif isinstance(e, tuple):
                i, n = e
                pattern.append(i - n if draw(st.booleans()) else i)
            else:
                pattern.append(e)
        patterns.append(tuple(pattern))
    for extra in draw(st.lists(st.lists(KEYS, min_size=1, max_size=3), max_size=2)):
        patterns.append(tuple(extra))  # paths that may match nothing
    for done in patterns:
        texts.append(_text(done, draw))
    return tree, patterns, texts


def _matches(pattern: tuple[Any, ...], path: tuple[Any, ...]) -> bool:
    if len(pattern) != len(path):
        return False
    for p, e in zip(pattern, path, strict=True):
        if p is WILD:
            continue
        if isinstance(e, tuple):
            i, n = e
            if not (isinstance(p, int) and (p == i or p == i - n)):
                return False
        elif p != e:
            return False
    return True


def _expected(tree: Any, patterns: list[tuple[Any, ...]], path: tuple[Any, ...] = ()) -> Any:
    if path and any(_matches(p, path) for p in patterns):
        return Secret(tree)
    if isinstance(tree, dict):
        return {k: _expected(v, patterns, (*path, k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_expected(v, patterns, (*path, (i, len(tree)))) for i, v in enumerate(tree)]
    return tree


def _typed(tree: Any) -> Any:
    if isinstance(tree, Secret):
        return {"secret": _typed(tree.reveal())}
    if isinstance(tree, dict):
        return {"dict": {k: _typed(v) for k, v in tree.items()}}
    if isinstance(tree, list):
        return {"list": [_typed(v) for v in tree]}
    return {type(tree).__name__: tree}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees_and_paths())
def test_every_declared_leaf_is_sealed_nothing_else_and_the_tree_round_trips(
    case: tuple[Any, list[tuple[Any, ...]], list[str]],
) -> None:
    tree, patterns, texts = case
    before = copy.deepcopy(tree)
    marked = veil.mark_secret(tree, texts)
    assert tree == before  # the argument is never changed
    expected = _expected(tree, patterns)
    assert json.dumps(_typed(marked)) == json.dumps(_typed(expected))
    provider = LocalKeyProvider(PROVIDER_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakWarning)
        data, _doc = dump_document({"t": marked}, provider=provider, stack="dev")
    back = loads(data, provider=provider)["t"]
    assert json.dumps(_typed(back), sort_keys=True) == json.dumps(_typed(expected), sort_keys=True)


# --- a sealed path stays sealed ----------------------------------------------------------------


def _save(tree: Any, previous: Any = None, **options: Any) -> tuple[bytes, Any, list[str]]:
    provider = LocalKeyProvider(PROVIDER_KEY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, doc = dump_document(
            tree, provider=provider, stack="dev", previous=previous, **options
        )
    messages = [str(w.message) for w in caught if issubclass(w.category, LeakWarning)]
    return data, doc, messages


def test_a_plain_value_at_a_path_sealed_before_is_sealed_with_a_warning() -> None:
    _d, first, _ = _save({"db": {"host": "h", "password": Secret("pw-1")}})
    data, second, messages = _save({"db": {"host": "h", "password": "pw-1"}}, first)
    assert len(messages) == 1
    assert "db.password" in messages[0]
    assert "pw-1" not in messages[0]
    assert _is_sealed(json.loads(data)["tree"]["db"]["password"])
    back = loads(data, provider=LocalKeyProvider(PROVIDER_KEY))
    assert isinstance(back["db"]["password"], Secret)
    assert back["db"]["host"] == "h"
    assert second.guarded == (("db", "password"),)


def test_a_changed_plain_value_at_a_sealed_path_is_sealed() -> None:
    _d, first, _ = _save({"db": {"password": Secret("old")}})
    data, _doc, messages = _save({"db": {"password": "new-value"}}, first)
    assert messages
    back = loads(data, provider=LocalKeyProvider(PROVIDER_KEY))
    assert back["db"]["password"].reveal() == "new-value"


def test_a_sealed_path_stays_sealed_across_saves() -> None:
    _d, doc, _ = _save({"k": Secret("v")})
    for _ in range(3):
        data, doc, messages = _save({"k": "v"}, doc)
        assert messages
        assert _is_sealed(json.loads(data)["tree"]["k"])


def test_a_sealed_path_stays_sealed_across_a_rotation() -> None:
    _d, first, _ = _save({"k": Secret("v")})
    data, rotated, messages = _save({"k": "v"}, first, rotate_key=True)
    assert messages
    assert rotated.key_id != first.key_id
    assert _is_sealed(json.loads(data)["tree"]["k"])
    data, _doc, messages = _save({"k": "v"}, rotated)
    assert messages
    assert _is_sealed(json.loads(data)["tree"]["k"])


def test_allow_plaintext_lets_a_sealed_path_go_out_in_clear_and_it_stays_so() -> None:
    _d, first, _ = _save({"db": {"password": Secret("pw")}})
    data, second, messages = _save(
        {"db": {"password": "pw"}}, first, allow_plaintext=["db.password"]
    )
    assert messages == []
    assert json.loads(data)["tree"]["db"]["password"] == "pw"
    data, _doc, messages = _save({"db": {"password": "pw"}}, second)
    assert messages == []
    assert json.loads(data)["tree"]["db"]["password"] == "pw"


def test_strict_refuses_a_plain_value_at_a_sealed_path() -> None:
    _d, first, _ = _save({"k": Secret("v")})
    with pytest.raises(veil.PlaintextLeakError, match="k"):
        _save({"k": "v"}, first, strict=True)


def test_a_container_at_a_sealed_path_is_sealed_whole() -> None:
    _d, first, _ = _save({"conn": Secret("dsn")})
    tree = {"conn": {"user": "u", "password": Secret("p"), "$secret": {"x": 1}}}
    data, _doc, messages = _save(tree, first)
    assert messages
    stored = json.loads(data)["tree"]
    assert _is_sealed(stored["conn"])
    back = loads(data, provider=LocalKeyProvider(PROVIDER_KEY))
    assert back["conn"].reveal() == {"user": "u", "password": "p", "$secret": {"x": 1}}


def test_a_sealed_path_under_an_escaped_dict_stays_sealed() -> None:
    _d, first, _ = _save({"e": {"$secret": Secret("s")}})
    data, _doc, messages = _save({"e": {"$secret": "s"}}, first)
    assert messages
    back = loads(data, provider=LocalKeyProvider(PROVIDER_KEY))
    assert isinstance(back["e"]["$secret"], Secret)


def test_a_field_that_loses_its_declaration_stays_sealed() -> None:
    @dataclasses.dataclass
    class V1:
        user: str
        password: Annotated[str, veil.Secret]

    @dataclasses.dataclass
    class V2:  # the declaration was lost in a refactor
        user: str
        password: str

    _d, first, _ = _save({"db": V1("u", "pw")})
    data, _doc, messages = _save({"db": V2("u", "pw")}, first)
    assert messages
    assert "db.password" in messages[0]
    stored = json.loads(data)["tree"]["db"]
    assert stored["user"] == "u"
    assert _is_sealed(stored["password"])


def test_paths_gone_or_still_sealed_need_nothing() -> None:
    _d, first, _ = _save({"a": Secret("x"), "b": Secret("y")})
    _d, _doc, messages = _save({"a": Secret("x")}, first)
    assert messages == []


def test_sticky_paths_in_a_stack_across_saves_and_rotation(tmp_path: Path) -> None:
    from veil.providers import PassphraseProvider

    def provider() -> PassphraseProvider:
        return PassphraseProvider(
            passphrase="correct horse battery staple",
            memory_cost=8,
            iterations=1,
            lanes=1,
            insecure_weak_kdf=True,
        )

    backend = f"file://{tmp_path / 'state'}"
    with veil.Stack.create(
        "dev", backend=backend, secrets_provider=provider(), project_dir=tmp_path
    ) as s:
        s.export("db", {"password": veil.secret("pw"), "host": "h"})
        s.save()
        s.export("db", {"password": "pw", "host": "h"})
        with pytest.warns(LeakWarning, match=r"db\.password"):
            s.save()
        assert isinstance(s.outputs["db"]["password"], Secret)  # sealed in memory too
        s.export("db", {"password": Output.from_input("pw2"), "host": "h"})
        s.rotate_key()
        with pytest.warns(LeakWarning, match=r"db\.password"):
            s.save()
    with veil.Stack.open(
        "dev", backend=backend, secrets_provider=provider(), project_dir=tmp_path
    ) as s:
        assert s.state_tree["outputs"]["db"]["password"].reveal() == "pw2"
        assert s.state_tree["outputs"]["db"]["host"] == "h"


def test_an_output_the_leak_guard_seals_becomes_a_secret_output_in_the_stack(
    tmp_path: Path,
) -> None:
    from veil.providers import PassphraseProvider

    provider = PassphraseProvider(
        passphrase="correct horse battery staple",
        memory_cost=8,
        iterations=1,
        lanes=1,
        insecure_weak_kdf=True,
    )
    backend = f"file://{tmp_path / 'state'}"
    with veil.Stack.create(
        "dev", backend=backend, secrets_provider=provider, project_dir=tmp_path
    ) as s:
        s.export("url", Output.from_input("postgres://app:pw-123456@db/app"))
        with pytest.warns(LeakWarning, match="url"):
            s.save()
        assert isinstance(s.outputs["url"], Secret)


# --- property: declared fields of typed trees ------------------------------------------------


@dataclasses.dataclass
class PNode:
    name: int
    pw: Annotated[str, veil.Secret]
    kids: list[Any]
    by_name: dict[str, Any]


@attrs.frozen(slots=True)
class PLeaf:
    id: int
    token: str = veil.secret_field()
    tags: tuple[int, ...] = ()


class PPair(NamedTuple):
    left: Any
    key: Annotated[list[int], veil.Secret]


TYPED = st.recursive(
    st.builds(PLeaf, st.integers(), st.just("tok"), st.lists(st.integers(), max_size=2).map(tuple)),
    lambda children: st.one_of(
        st.builds(
            PNode,
            st.integers(),
            st.just("pw"),
            st.lists(children, max_size=3),
            st.dictionaries(st.sampled_from(["a", "b"]), children, max_size=2),
        ),
        st.builds(PPair, children, st.lists(st.integers(), max_size=2)),
        st.lists(children, max_size=3),
    ),
    max_leaves=12,
)


def _declared_paths(value: Any, prefix: str) -> tuple[list[str], Any]:
    """(paths of declared secret fields, the plain form) of a typed tree."""
    if isinstance(value, PNode):
        kids = [_declared_paths(k, f"{prefix}.kids[{i}]") for i, k in enumerate(value.kids)]
        named = {k: _declared_paths(v, f"{prefix}.by_name.{k}") for k, v in value.by_name.items()}
        paths = [f"{prefix}.pw"] + [p for ps, _ in kids for p in ps]
        paths += [p for ps, _ in named.values() for p in ps]
        plain = {
            "name": value.name,
            "pw": "pw",
            "kids": [f for _, f in kids],
            "by_name": {k: f for k, (_, f) in named.items()},
        }
        return paths, plain
    if isinstance(value, PLeaf):
        return [f"{prefix}.token"], {"id": value.id, "token": "tok", "tags": list(value.tags)}
    if isinstance(value, PPair):
        paths, left = _declared_paths(value.left, f"{prefix}.left")
        return [*paths, f"{prefix}.key"], {"left": left, "key": list(value.key)}
    parts = [_declared_paths(v, f"{prefix}[{i}]") for i, v in enumerate(value)]
    return [p for ps, _ in parts for p in ps], [f for _, f in parts]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TYPED)
def test_every_declared_field_of_a_typed_tree_is_sealed_and_nothing_else(value: Any) -> None:
    provider = LocalKeyProvider(PROVIDER_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakWarning)
        data = dumps({"t": value}, provider=provider, stack="dev")
    back = loads(data, provider=provider)
    expected_paths, plain = _declared_paths(value, "t")
    assert sorted(_secret_paths(back)) == sorted(expected_paths)
    assert veil.is_secret(Output.from_input(value)) == bool(expected_paths)

    def opened(tree: Any) -> Any:
        if isinstance(tree, Secret):
            return tree.reveal()
        if isinstance(tree, dict):
            return {k: opened(v) for k, v in tree.items()}
        if isinstance(tree, list):
            return [opened(v) for v in tree]
        return tree

    assert opened(back) == {"t": plain}


def test_pulumi_style_input_classes_declare_on_init_or_getter() -> None:
    stored = _stored(
        {
            "a": GeneratedArgs(host="h", password="pw", token="plain-token"),
            "b": GeneratedArgsWithGetter(token="t", host="h"),
        }
    )
    assert stored["a"]["host"] == "h"
    assert _is_sealed(stored["a"]["password"])
    assert stored["a"]["token"] == "plain-token"
    assert _is_sealed(stored["b"]["token"])
    assert stored["b"]["host"] == "h"
    o = Output.from_input(GeneratedArgs(host="h", password="pw", token="t"))
    assert veil.is_secret(o)
    assert veil.is_secret(o.password)


def test_a_dataclass_field_never_set_is_left_out() -> None:
    @dataclasses.dataclass
    class Partial:
        pw: Annotated[str, veil.Secret]
        later: str = dataclasses.field(init=False)

    stored = _stored({"p": Partial("x")})["p"]
    assert set(stored) == {"pw"}
    assert _is_sealed(stored["pw"])


def test_typeddict_of_typing_extensions_with_not_required_secret() -> None:
    import typing_extensions

    class Row(typing_extensions.TypedDict):
        id: int
        key: typing_extensions.NotRequired[Annotated[str, veil.Secret]]

    marked = veil.mark_secret({"id": 1, "key": "k"}, type=Row)
    assert isinstance(marked["key"], Secret)
    assert marked["id"] == 1
