"""The names the design promises are importable from the top-level package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import veil


def test_every_promised_name_is_exported() -> None:
    promised = {
        "Output", "Secret", "Stack", "secret", "unsecret", "is_secret", "reveal", "UNKNOWN",
        "deferred_output", "contains_unknowns", "LeakWarning", "VeilError", "state",
        "providers",
    }  # fmt: skip
    assert promised <= set(veil.__all__)
    for name in veil.__all__:
        assert hasattr(veil, name), name


def test_state_and_providers_are_reachable_after_import_veil_alone() -> None:
    code = (
        "import veil\n"
        "assert callable(veil.state.dumps) and callable(veil.state.loads)\n"
        "assert callable(veil.providers.provider_from_url)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_secret_and_redact_are_functions_not_modules() -> None:
    import importlib
    import inspect

    import pytest

    assert inspect.isfunction(veil.secret)
    assert inspect.isfunction(veil.redact)
    for name in ("veil.secret", "veil.redact"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


def test_output_module_exports_its_names() -> None:
    import veil.output

    assert sorted(veil.output.__all__) == [
        "Input", "InputType", "Inputs", "Output", "UNKNOWN", "Unknown",
        "contains_unknowns", "deferred_output",
    ]  # fmt: skip
    for name in veil.output.__all__:
        assert getattr(veil.output, name) is getattr(veil, name)


def _veil_imports(path: Path, module: str) -> set[str]:
    """The veil modules ``module`` imports anywhere in its file (functions included),
    apart from imports only for type checkers."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.ImportFrom):
                base = package
                for _ in range(child.level - 1):
                    base = base.rpartition(".")[0]
                target = (
                    f"{base}.{child.module}"
                    if child.level and child.module
                    else (base if child.level else child.module or "")
                )
                if target.startswith("veil"):
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in child.names)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("veil"))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_no_import_cycle_between_veil_modules() -> None:
    root = Path(veil.__file__).parent
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    # A package's __init__ re-exports its modules: an edge to the package is not a
    # cycle with its own modules, so packages are left out of the graph.
    graph = {
        name: {m for m in _veil_imports(path, name) if m in modules and m != name}
        for name, path in modules.items()
        if path.name != "__init__.py"
    }
    graph = {name: {m for m in deps if m in graph} for name, deps in graph.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = " -> ".join([*trail[trail.index(name) :], name])
            raise AssertionError(f"import cycle: {cycle}")
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


# The public names of each package, exactly: a name added to or dropped from an
# ``__all__`` is a change of the public API and shows up here (and in docs/api.md).
EXPECTED_ALL: dict[str, set[str]] = {
    "veil": {
        "MASK", "UNKNOWN", "Fingerprint", "Input", "InputType", "Inputs", "LogFilterHandle",
        "Output", "Secret", "SecretRedactingFilter", "Stack", "StackConfig", "Unknown",
        "ValueCipher", "__version__", "contains_unknowns", "deferred_output", "ephemeral",
        "fingerprint", "install_log_filter", "is_ephemeral", "is_secret", "providers",
        "redact", "reveal", "secret", "state", "unsecret",
        "mark_secret", "register_secret_paths", "schema", "secret_field",
        # and every error class, re-exported from veil.errors
    },
    "veil.schema": {
        "ENTRY_POINT_GROUP", "SECRET_METADATA", "mark_secret", "register_secret_paths",
        "registered_secret_paths", "secret_field",
    },
    "veil.state": {
        "DEFAULT_HISTORY_SIZE", "DEFAULT_STATE_URL", "STORE_ENTRY_POINT_GROUP", "Document",
        "DocumentHeader", "FileStore", "HeldLock", "HistoryEntry", "LockInfo", "PathLike",
        "ProviderEntry", "StackLock", "StateStore", "dump_document", "dump_document_async",
        "dumps", "dumps_async", "known_store_schemes", "load_document", "loads",
        "read_header", "register_store_scheme", "store_from_url", "validate_stack_name",
    },
    "veil.providers": {
        "AgeProvider", "AwsKmsProvider", "AzureKeyVaultProvider", "ENTRY_POINT_GROUP",
        "GcpKmsProvider",
        "LocalKeyProvider", "PassphraseProvider", "VaultTransitProvider",
        "SecretsProvider", "context_bytes", "known_schemes", "provider_class",
        "provider_from_description", "provider_from_url", "register_provider",
    },
    "veil.testing": {
        "ProviderComplianceSuite", "Restore", "StateStoreComplianceSuite", "StoreFactory",
    },
    "veil.interop.pulumi": {
        "CHECK_PLAINTEXT", "KDF_ITERATIONS", "PassphraseCrypter", "PulumiStackConfig",
        "SECRET_SIG", "SIG_KEY", "crypter_from_checkpoint", "dump_checkpoint",
        "load_checkpoint", "passphrase_from_env",
    },
    "veil.errors": {
        "ConfigError", "ConfigMissingError", "ConfigStateMismatchError", "DecryptionError",
        "EphemeralValueError",
        "IncorrectPassphraseError", "InvalidStackNameError", "InvalidValueError",
        "KeyFilePermissionError", "KeyUnwrapError", "LeakWarning", "OutputToStringError",
        "PassphraseRequiredError", "PendingOutputError", "PlaintextLeakError",
        "ProviderAccessError", "ProviderConfigError", "ProviderError", "ProviderKeyError",
        "ProviderUnavailableError", "StoreAccessError", "StoreUnavailableError",
        "SchemaError", "SecretPathError", "UnknownSchemaError", "SecretPickleError",
        "StackExistsError", "StackNotFoundError", "StateError",
        "StateFormatError", "StateIntegrityError", "StateLockedError", "StateRollbackError",
        "TrustError", "UnknownProviderError", "UnknownValueError", "UsageError", "VeilError",
    },
}  # fmt: skip
EXPECTED_ALL["veil"] |= EXPECTED_ALL["veil.errors"]


def test_all_lists_exactly() -> None:
    import importlib

    for name, expected in EXPECTED_ALL.items():
        module = importlib.import_module(name)
        listed = list(module.__all__)
        assert len(listed) == len(set(listed)), f"{name}.__all__ lists a name twice"
        assert set(listed) == expected, (
            f"{name}.__all__: added {sorted(set(listed) - expected)}, "
            f"missing {sorted(expected - set(listed))}"
        )
        for attribute in listed:
            assert getattr(module, attribute) is not None, f"{name}.{attribute}"


def test_internals_stay_out_of_the_state_package() -> None:
    import veil.state.document

    for internal in ("load_with_stored_providers", "unwrap_data_key", "provider_entries_from_json"):
        assert internal not in veil.state.__all__
        assert internal not in veil.state.document.__all__
        assert callable(getattr(veil.state.document, internal))  # still importable there


def test_dump_options_are_spelled_out_for_type_checkers() -> None:
    import inspect

    from veil import state
    from veil.state import document

    options = [
        p.name
        for p in inspect.signature(document.dump_document).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    for function in (
        document.dumps,
        state.dumps_async,
        state.dump_document_async,
    ):
        parameters = inspect.signature(function).parameters.values()
        assert not any(p.kind is p.VAR_KEYWORD for p in parameters), function.__name__
        assert [p.name for p in parameters if p.kind is p.KEYWORD_ONLY] == options
