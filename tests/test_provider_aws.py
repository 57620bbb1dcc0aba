"""AwsKmsProvider against moto's server: compliance, URL forms, typed failures, calls per open."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import veil
from veil import (
    KeyUnwrapError,
    ProviderAccessError,
    ProviderConfigError,
    ProviderKeyError,
    ProviderUnavailableError,
    SecretPickleError,
)
from veil.crypto import generate_data_key
from veil.providers import provider_from_url
from veil.testing import ProviderComplianceSuite

boto3 = pytest.importorskip("boto3")
from servers import moto as _moto  # noqa: E402
from servers.moto import REGION, MotoServer, closed_port  # noqa: E402
from veil.providers.aws import AwsKmsProvider  # noqa: E402

moto_server = _moto.moto_server
aws_env = _moto.aws_env
CONTEXT = {"stack": "dev"}


def _kms(server: MotoServer, region: str = REGION) -> Any:
    return boto3.client("kms", region_name=region, endpoint_url=server.endpoint)


def _new_key(server: MotoServer, region: str = REGION, **kwargs: Any) -> str:
    arn: str = _kms(server, region).create_key(**kwargs)["KeyMetadata"]["Arn"]
    return arn


@pytest.fixture
def key_arn(aws_env: MotoServer) -> str:
    return _new_key(aws_env)


@pytest.fixture
def key_id(key_arn: str) -> str:
    return key_arn.rsplit("/", 1)[1]


class TestAwsKmsProvider(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self, key_id: str) -> AwsKmsProvider:
        return AwsKmsProvider(key_id, region=REGION)

    @pytest.fixture
    def other_provider(self, aws_env: MotoServer) -> AwsKmsProvider:
        return AwsKmsProvider(_new_key(aws_env), region=REGION)


# --- URL forms ----------------------------------------------------------------------------


def test_key_id_url(key_id: str) -> None:
    provider = provider_from_url(f"awskms://{key_id}?region={REGION}")
    assert isinstance(provider, AwsKmsProvider)
    assert (provider.key_id, provider.region) == (key_id, REGION)
    key = generate_data_key()
    assert provider.unwrap_key(provider.wrap_key(key, CONTEXT), CONTEXT) == key
    assert provider.url == f"awskms://{key_id}?region={REGION}"


def test_alias_url(aws_env: MotoServer, key_id: str) -> None:
    _kms(aws_env).create_alias(AliasName="alias/veil-test-alias", TargetKeyId=key_id)
    provider = provider_from_url(f"awskms://alias/veil-test-alias?region={REGION}")
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CONTEXT)
    assert AwsKmsProvider(key_id, region=REGION).unwrap_key(wrapped, CONTEXT) == key
    assert provider.describe() == {"key_id": "alias/veil-test-alias", "region": REGION}


@pytest.mark.parametrize("slashes", ["//", "///"])
def test_arn_url_takes_the_region_from_the_arn(
    key_arn: str, slashes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    provider = provider_from_url(f"awskms:{slashes}{key_arn}")
    assert isinstance(provider, AwsKmsProvider)
    assert provider.region == REGION
    key = generate_data_key()
    assert provider.unwrap_key(provider.wrap_key(key, CONTEXT), CONTEXT) == key
    assert isinstance(provider_from_url(provider.url), AwsKmsProvider)


def test_arn_and_region_that_disagree_are_refused(key_arn: str) -> None:
    with pytest.raises(ProviderConfigError, match="region"):
        provider_from_url(f"awskms://{key_arn}?region=eu-west-1")


def test_url_without_a_region_anywhere_is_refused(
    key_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(ProviderConfigError, match=r"names no region.*\?region="):
        provider_from_url(f"awskms://{key_id}")


def test_region_comes_from_the_environment_when_the_url_has_none(key_id: str) -> None:
    provider = provider_from_url(f"awskms://{key_id}")
    assert isinstance(provider, AwsKmsProvider)
    assert provider.region == REGION


@pytest.mark.parametrize(
    "url",
    [
        "awskms://",
        "awskms://?region=us-east-1",
        "awskms://arn:aws:s3:::bucket",
        "awskms://has space?region=us-east-1",
        "awskms://k?region=us-east-1&colour=red",
    ],
)
def test_malformed_urls_are_config_errors(aws_env: MotoServer, url: str) -> None:
    with pytest.raises(ProviderConfigError):
        provider_from_url(url)


def test_profile_supplies_the_credentials_and_stays_out_of_the_description(
    aws_env: MotoServer, key_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[ci]\n"
        f"aws_access_key_id = {aws_env.env['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {aws_env.env['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    provider = provider_from_url(f"awskms://{key_id}?region={REGION}&profile=ci")
    assert provider.url.endswith("&profile=ci")
    assert provider.describe() == {"key_id": key_id, "region": REGION}
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CONTEXT)
    again = provider.with_description(provider.describe())
    assert again.unwrap_key(wrapped, CONTEXT) == key
    with pytest.raises(ProviderAccessError):  # without the profile: no credentials
        AwsKmsProvider.from_description(provider.describe()).unwrap_key(wrapped, CONTEXT)


def test_unknown_profile_is_an_access_error(key_id: str) -> None:
    with pytest.raises(ProviderAccessError, match="ghost"):
        provider_from_url(f"awskms://{key_id}?region={REGION}&profile=ghost")


# --- failures ------------------------------------------------------------------------------


def _assert_clean(exc: BaseException, secret: bytes) -> None:
    assert exc.__cause__ is None
    assert exc.__context__ is None
    text = str(exc) + repr(exc.args)
    assert secret.hex() not in text
    assert repr(secret) not in text


def test_unreachable_endpoint_fails_fast(key_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    provider = AwsKmsProvider(key_id, region=REGION)
    key = generate_data_key()
    start = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match=r"could not be reached") as info:
        provider.wrap_key(key, CONTEXT)
    assert time.monotonic() - start < 30
    _assert_clean(info.value, key)
    with pytest.raises(ProviderUnavailableError):
        provider.unwrap_key(b"x" * 100, CONTEXT)


@pytest.fixture
def hanging_up_endpoint() -> Iterator[str]:
    """A loopback server that accepts each connection and closes it at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_endpoint_that_hangs_up_fails_fast(
    key_id: str, hanging_up_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", hanging_up_endpoint)
    start = time.monotonic()
    with pytest.raises(ProviderUnavailableError):
        AwsKmsProvider(key_id, region=REGION).unwrap_key(b"x" * 100, CONTEXT)
    assert time.monotonic() - start < 30


def test_kms_specific_endpoint_variable_wins(
    key_id: str, monkeypatch: pytest.MonkeyPatch, aws_env: MotoServer
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", aws_env.endpoint)
    provider = AwsKmsProvider(key_id, region=REGION)
    key = generate_data_key()
    assert provider.unwrap_key(provider.wrap_key(key, CONTEXT), CONTEXT) == key


def test_no_credentials_is_an_access_error(key_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    key = generate_data_key()
    with pytest.raises(ProviderAccessError, match="no usable AWS credentials") as info:
        AwsKmsProvider(key_id, region=REGION).wrap_key(key, CONTEXT)
    _assert_clean(info.value, key)


def test_missing_key_is_a_key_error(aws_env: MotoServer) -> None:
    provider = AwsKmsProvider("11111111-2222-3333-4444-555555555555", region=REGION)
    with pytest.raises(ProviderKeyError, match=r"no such key.*region"):
        provider.wrap_key(generate_data_key(), CONTEXT)
    with pytest.raises(ProviderKeyError, match="no such key"):
        AwsKmsProvider("alias/nobody", region=REGION).wrap_key(generate_data_key(), CONTEXT)


def test_key_of_another_region_is_a_key_error(key_id: str, key_arn: str) -> None:
    key = generate_data_key()
    wrapped = AwsKmsProvider(key_id, region=REGION).wrap_key(key, CONTEXT)
    elsewhere = AwsKmsProvider(key_id, region="eu-west-1")
    with pytest.raises(ProviderKeyError, match="eu-west-1"):
        elsewhere.wrap_key(key, CONTEXT)
    with pytest.raises((ProviderKeyError, KeyUnwrapError)):
        elsewhere.unwrap_key(wrapped, CONTEXT)


def test_disabled_key_is_a_key_error(aws_env: MotoServer, key_id: str) -> None:
    provider = AwsKmsProvider(key_id, region=REGION)
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CONTEXT)
    _kms(aws_env).disable_key(KeyId=key_id)
    with pytest.raises(ProviderKeyError, match="disabled") as info:
        provider.wrap_key(key, CONTEXT)
    _assert_clean(info.value, key)
    with pytest.raises(ProviderKeyError, match="disabled"):
        provider.unwrap_key(wrapped, CONTEXT)
    _kms(aws_env).enable_key(KeyId=key_id)
    assert provider.unwrap_key(wrapped, CONTEXT) == key


def test_key_pending_deletion_is_a_key_error(aws_env: MotoServer, key_id: str) -> None:
    provider = AwsKmsProvider(key_id, region=REGION)
    wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
    _kms(aws_env).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with pytest.raises(ProviderKeyError, match="pending deletion"):
        provider.unwrap_key(wrapped, CONTEXT)


@pytest.mark.parametrize(
    ("usage", "spec"), [("ENCRYPT_DECRYPT", "RSA_2048"), ("SIGN_VERIFY", "ECC_NIST_P256")]
)
def test_key_of_the_wrong_type_is_a_key_error(aws_env: MotoServer, usage: str, spec: str) -> None:
    arn = _new_key(aws_env, KeyUsage=usage, KeySpec=spec)
    with pytest.raises(ProviderKeyError, match=r"wrong type.*SYMMETRIC_DEFAULT"):
        AwsKmsProvider(arn).wrap_key(generate_data_key(), CONTEXT)


@pytest.fixture
def iam_enforced(aws_env: MotoServer) -> Iterator[Any]:
    """moto checking every request against the caller's IAM policies, as AWS does."""
    from moto import settings

    iam = boto3.client("iam", region_name=REGION, endpoint_url=aws_env.endpoint)
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield iam
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def _user_allowed(iam: Any, name: str, actions: list[str]) -> dict[str, str]:
    from moto import settings

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    try:
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name,
            PolicyName="kms",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def test_access_denied_names_the_missing_permission(
    key_id: str, iam_enforced: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_data_key()
    wrapped = AwsKmsProvider(key_id, region=REGION)  # made before the credentials change
    encrypt_only = _user_allowed(iam_enforced, "encrypt-only", ["kms:Encrypt"])
    decrypt_only = _user_allowed(iam_enforced, "decrypt-only", ["kms:Decrypt"])

    for name, value in encrypt_only.items():
        monkeypatch.setenv(name, value)
    blob = AwsKmsProvider(key_id, region=REGION).wrap_key(key, CONTEXT)
    with pytest.raises(ProviderAccessError, match=r"needs the kms:Decrypt permission") as info:
        AwsKmsProvider(key_id, region=REGION).unwrap_key(blob, CONTEXT)
    _assert_clean(info.value, key)

    for name, value in decrypt_only.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ProviderAccessError, match=r"needs the kms:Encrypt permission"):
        AwsKmsProvider(key_id, region=REGION).wrap_key(key, CONTEXT)
    assert AwsKmsProvider(key_id, region=REGION).unwrap_key(blob, CONTEXT) == key
    del wrapped


def test_refused_credentials_are_an_access_error(
    key_id: str, iam_enforced: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAKNOWNKEY0000")
    with pytest.raises(ProviderAccessError, match="credentials were refused"):
        AwsKmsProvider(key_id, region=REGION).wrap_key(generate_data_key(), CONTEXT)


def test_a_wrapped_key_copied_to_another_stack_does_not_unwrap(key_id: str) -> None:
    provider = AwsKmsProvider(key_id, region=REGION)
    wrapped = provider.wrap_key(generate_data_key(), {"stack": "dev", "project": "web"})
    with pytest.raises(KeyUnwrapError, match="another stack"):
        provider.unwrap_key(wrapped, {"stack": "prod", "project": "web"})


# --- hygiene -------------------------------------------------------------------------------


def test_provider_refuses_pickling(key_id: str) -> None:
    with pytest.raises(SecretPickleError):
        pickle.dumps(AwsKmsProvider(key_id, region=REGION))


def test_import_veil_imports_no_aws_sdk() -> None:
    code = (
        "import sys, veil, veil.providers, veil.state; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_boto3_says_which_extra_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["boto3"] = None
        from veil import ProviderConfigError, StateError
        from veil.providers import provider_from_url
        from veil.state import store_from_url
        for build, url in ((provider_from_url, "awskms://alias/x?region=us-east-1"),
                           (store_from_url, "s3://bucket?region=us-east-1")):
            try:
                build(url)
            except (ProviderConfigError, StateError) as exc:
                print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("ProviderConfigError")
    assert "StateError" in lines[1].split()[0]
    assert all("pip install 'veil[aws]'" in line for line in lines)


# --- one call per open -------------------------------------------------------------------------


def test_open_costs_one_kms_call_and_an_unchanged_save_none(
    aws_env: MotoServer, key_id: str, tmp_path: Path
) -> None:
    backend = f"file://{tmp_path / 'state'}"
    with aws_env.counting() as created:
        stack = veil.Stack.create(
            "dev",
            backend=backend,
            secrets_provider=f"awskms://{key_id}?region={REGION}",
            project_dir=tmp_path,
        )
        for i in range(10_000):
            stack.export(f"s{i}", veil.secret(f"value-{i}"))
        stack.save()
        stack.close()
    assert created == {"kms:Encrypt": 1}

    with aws_env.counting() as opened:
        stack = veil.Stack.open("dev", backend=backend, project_dir=tmp_path)
    assert opened == {"kms:Decrypt": 1}
    assert veil.reveal(stack.outputs["s9999"]) == "value-9999"

    with aws_env.counting() as saved:
        stack.save()
        stack.save()
    assert saved == {}
    stack.close()


def test_nothing_is_written_when_kms_refuses(
    aws_env: MotoServer, key_id: str, tmp_path: Path
) -> None:
    _kms(aws_env).disable_key(KeyId=key_id)
    state = tmp_path / "state"
    with pytest.raises(ProviderKeyError, match="disabled"):
        veil.Stack.create(
            "dev",
            backend=f"file://{state}",
            secrets_provider=f"awskms://{key_id}?region={REGION}",
            project_dir=tmp_path,
        )
    store = veil.state.store_from_url(f"file://{state}")
    assert store.list_stacks() == []
    assert store.lock_info("dev") is None
    assert [p.name for p in tmp_path.iterdir() if p.name != "state"] == []  # no config file
