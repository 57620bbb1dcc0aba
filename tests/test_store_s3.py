"""S3Store against moto's server: the StateStore compliance suite, conditional writes,
a scan of every object for plaintext, and typed failures in bounded time."""

from __future__ import annotations

import contextlib
import json
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import veil
from veil import (
    SecretPickleError,
    StateError,
    StateLockedError,
    StoreAccessError,
    StoreUnavailableError,
)
from veil.state import store_from_url
from veil.testing import StateStoreComplianceSuite

boto3 = pytest.importorskip("boto3")
from servers import moto as _moto  # noqa: E402
from servers.moto import REGION, MotoServer, closed_port  # noqa: E402
from veil.state.s3 import S3Store  # noqa: E402

moto_server = _moto.moto_server
aws_env = _moto.aws_env
BUCKET = "veil-state-tests"


def _s3(server: MotoServer) -> Any:
    return boto3.client("s3", region_name=REGION, endpoint_url=server.endpoint)


@pytest.fixture
def bucket(aws_env: MotoServer) -> str:
    client = _s3(aws_env)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def store_url(aws_env: MotoServer, bucket: str) -> str:
    return f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}?region={REGION}&endpoint={aws_env.endpoint}"


class TestS3Store(StateStoreComplianceSuite):
    @pytest.fixture
    def store(self, store_url: str) -> S3Store:
        return S3Store.from_url(store_url)


def _all_objects(server: MotoServer, bucket: str) -> Iterator[tuple[str, bytes]]:
    client = _s3(server)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            yield item["Key"], body


# --- layout and conditional writes ------------------------------------------------------


def test_layout_under_the_prefix(aws_env: MotoServer, bucket: str) -> None:
    prefix = f"p-{uuid.uuid4().hex[:8]}/team a"
    store = S3Store(bucket, prefix, region=REGION, endpoint=aws_env.endpoint, history_size=2)
    for body in (b"1", b"2", b"3"):
        store.write("dev", body)
    keys = sorted(k for k, _ in _all_objects(aws_env, bucket) if k.startswith(prefix + "/"))
    assert keys == [
        f"{prefix}/history/dev/0000000002.json",
        f"{prefix}/history/dev/0000000003.json",
        f"{prefix}/stacks/dev.json",
    ]
    head = _s3(aws_env).head_object(Bucket=bucket, Key=f"{prefix}/stacks/dev.json")
    assert head["Metadata"] == {"veil-version": "3"}
    again = store_from_url(store.url)
    assert isinstance(again, S3Store)
    assert (again.bucket, again.prefix, again.history_size) == (bucket, prefix, 2)


def test_lock_object_holds_the_holder_record(aws_env: MotoServer, store_url: str) -> None:
    store = S3Store.from_url(store_url)
    with store.lock("dev", owner="alice") as lock:
        key = f"{store.prefix}/locks/dev.lock"
        record = json.loads(_s3(aws_env).get_object(Bucket=store.bucket, Key=key)["Body"].read())
        assert record["owner"] == "alice"
        assert record["token"] == lock.info.token
    assert store.lock_info("dev") is None


def test_a_lock_taken_by_another_tool_is_respected(aws_env: MotoServer, store_url: str) -> None:
    store = S3Store.from_url(store_url)
    record = veil.state.LockInfo("ci", "runner-7", 42, "2026-01-01T00:00:00+00:00", "t")
    _s3(aws_env).put_object(
        Bucket=store.bucket, Key=f"{store.prefix}/locks/dev.lock", Body=record.to_json()
    )
    with pytest.raises(StateLockedError, match=r"ci on host runner-7 \(pid 42\)"):
        store.write("dev", b"x")
    assert not store.exists("dev")


def test_state_overwritten_behind_a_held_lock_is_not_lost(
    aws_env: MotoServer, store_url: str
) -> None:
    store = S3Store.from_url(store_url)
    store.write("dev", b"v1")
    key = f"{store.prefix}/stacks/dev.json"
    with store.lock("dev"):
        # Another tool ignoring the lock replaces the object: the ETag no longer matches.
        _s3(aws_env).put_object(Bucket=store.bucket, Key=key, Body=b"theirs")
        with pytest.raises(StateLockedError, match="changed by another writer"):
            store.write("dev", b"mine")
    assert store.read("dev") == b"theirs"


# --- no plaintext anywhere ---------------------------------------------------------------


def test_no_object_holds_a_secret_in_plaintext(
    aws_env: MotoServer, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_PASSPHRASE", "correct horse battery staple")
    prefix = f"scan-{uuid.uuid4().hex[:8]}"
    backend = f"s3://{bucket}/{prefix}?region={REGION}&endpoint={aws_env.endpoint}"
    secrets = [f"s3cr3t-{uuid.uuid4().hex}" for _ in range(20)]
    stack = veil.Stack.create("dev", backend=backend, project_dir=tmp_path)
    for i, value in enumerate(secrets):
        stack.export(f"v{i}", veil.secret(value))
    stack.export("nested", {"db": {"password": veil.secret(secrets[0])}, "port": 5432})
    stack.save()
    stack.export("later", veil.secret(secrets[1] + "-rotated"))
    stack.save()
    stack.close()
    reopened = veil.Stack.open("dev", backend=backend, project_dir=tmp_path)
    assert veil.reveal(reopened.outputs["v3"]) == secrets[3]
    reopened.close()

    objects = [(k, b) for k, b in _all_objects(aws_env, bucket) if k.startswith(prefix + "/")]
    assert len(objects) >= 3  # state and its kept versions
    for key, body in objects:
        for value in [*secrets, "correct horse battery staple"]:
            assert value.encode() not in body, f"{key} holds a secret"


# --- failures -------------------------------------------------------------------------------


def test_missing_bucket_is_an_access_error(aws_env: MotoServer) -> None:
    store = S3Store("no-such-bucket-here", region=REGION, endpoint=aws_env.endpoint)
    with pytest.raises(StoreAccessError, match=r"does not exist.*aws s3 mb"):
        store.write("dev", b"x")
    with pytest.raises(StoreAccessError, match="does not exist"):
        store.read("dev")
    with pytest.raises(StoreAccessError, match="does not exist"):
        store.list_stacks()
    with pytest.raises(StoreAccessError, match="does not exist"):
        store.exists("dev")
    with pytest.raises(StoreAccessError, match="does not exist"):
        store.history("dev")


def test_unreachable_endpoint_fails_fast(bucket: str) -> None:
    store = S3Store(bucket, region=REGION, endpoint=f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="could not be reached"):
        store.write("dev", b"x")
    with pytest.raises(StoreUnavailableError):
        store.read("dev")
    assert time.monotonic() - start < 30


def test_endpoint_from_the_environment(
    aws_env: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env.endpoint)
    store = store_from_url(f"s3://{bucket}/env-{uuid.uuid4().hex[:8]}?region={REGION}")
    store.write("dev", b"x")
    assert store.read("dev") == b"x"
    assert "endpoint" not in store.url


def test_no_credentials_is_an_access_error(
    bucket: str, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(bucket, region=REGION, endpoint=aws_env.endpoint)
    with pytest.raises(StoreAccessError, match="no usable AWS credentials"):
        store.write("dev", b"x")


@pytest.fixture
def read_only_credentials(aws_env: MotoServer) -> Iterator[dict[str, str]]:
    """An IAM user allowed to read but not write, with moto checking IAM policies."""
    from moto import settings

    iam = boto3.client("iam", region_name=REGION, endpoint_url=aws_env.endpoint)
    name = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="read",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:ListBucket"],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    try:
        yield {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def test_access_denied_names_the_permission(
    store_url: str, read_only_credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in read_only_credentials.items():
        monkeypatch.setenv(name, value)
    store = S3Store.from_url(store_url)
    assert store.list_stacks() == []
    with pytest.raises(StoreAccessError, match="access denied; the caller needs s3:PutObject"):
        store.write("dev", b"x")


def test_refused_credentials_are_an_access_error(
    store_url: str, read_only_credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAKNOWNKEY0000")
    with pytest.raises(StoreAccessError, match="credentials were refused"):
        S3Store.from_url(store_url).read("dev")


# --- URLs and hygiene ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3:///prefix",
        "s3://b?colour=red",
        "s3://b?history=many",
        "s3://b?history=-1",
    ],
)
def test_malformed_urls_are_state_errors(aws_env: MotoServer, url: str) -> None:
    with pytest.raises(StateError):
        store_from_url(url)


def test_url_without_a_region_anywhere_is_refused(
    aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(StateError, match=r"names no region"):
        store_from_url("s3://bucket/prefix")


def test_url_round_trip_holds_no_credentials(aws_env: MotoServer) -> None:
    store = store_from_url(
        "s3://b/team/infra?region=eu-west-1&endpoint=http://127.0.0.1:9&history=3"
    )
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.region, store.history_size) == (
        "b",
        "team/infra",
        "eu-west-1",
        3,
    )
    assert aws_env.env["AWS_SECRET_ACCESS_KEY"] not in store.url
    assert aws_env.env["AWS_ACCESS_KEY_ID"] not in store.url + repr(store)


def test_store_refuses_pickling(store_url: str) -> None:
    with pytest.raises(SecretPickleError):
        pickle.dumps(S3Store.from_url(store_url))
