"""Google Cloud: gcpkms:// stack opens and gs:// saves and opens, against loopback servers.

Run from a clone: python benchmarks/bench_gcp.py [--sizes 1000,10000]

Starts the loopback Cloud KMS and GCS servers of the test suite (tests/servers/) on
127.0.0.1 and reports, best and median of several runs:

- opening a stack of N secrets protected by gcpkms:// (file store), the KMS calls one
  open costs, and one unwrap by a freshly built provider (what each Stack.open does);
- saving (one secret changed) and opening a stack of N secrets on gs:// next to the
  file store, both with a fast passphrase provider so the store dominates.

Loopback figures leave the network out: against Google add one round trip per KMS call
and per GCS request (a save is about 7 requests: lock, read generation, upload,
history upload, history list, release; an open about 4).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.update(  # no metadata-server probes
    {"NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
)

import veil  # noqa: E402
from servers.gcp_kms import PROJECT_KEYS, GcpKmsServer  # noqa: E402
from servers.gcs import GcsServer  # noqa: E402
from veil import Stack  # noqa: E402
from veil.crypto import generate_data_key  # noqa: E402
from veil.providers import PassphraseProvider  # noqa: E402
from veil.providers.gcp import GcpKmsProvider  # noqa: E402


def timed(f: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times) * 1000, statistics.median(times) * 1000


def fill(stack: Stack, n: int) -> None:
    for i in range(n):
        stack.export(f"s{i}", veil.secret(f"value-{i:08d}"))
    stack.save()


def bench_kms(n: int, kms: GcpKmsServer, key: str, runs: int) -> None:
    project = Path(tempfile.mkdtemp())
    backend = f"file://{project}/state"
    with Stack.create(
        "big", backend=backend, secrets_provider=f"gcpkms://{key}", project_dir=project
    ) as s:
        fill(s, n)

    def open_stack() -> None:
        with Stack.open("big", backend=backend, project_dir=project, lock=False):
            pass

    before = kms.calls["decrypt"]
    best, median = timed(open_stack, runs)
    calls = (kms.calls["decrypt"] - before) / runs
    print(
        f"gcpkms open, {n:>6} secrets: best {best:7.1f} ms, median {median:7.1f} ms, "
        f"{calls:.0f} KMS call(s) per open"
    )


def bench_store(name: str, backend: str, n: int, runs: int) -> None:
    provider = PassphraseProvider("bench passphrase", memory_cost=8, iterations=1, lanes=1)
    project = Path(tempfile.mkdtemp())
    with Stack.create("s", backend=backend, secrets_provider=provider, project_dir=project) as s:
        fill(s, n)
        count = [0]

        def save() -> None:
            count[0] += 1
            s.export("s0", veil.secret(f"changed-{count[0]}"))
            s.save()

        saved = timed(save, runs)

    def open_stack() -> None:
        with Stack.open("s", backend=backend, provider=provider, project_dir=project, lock=False):
            pass

    opened = timed(open_stack, runs)
    print(
        f"{name} {n:>6} secrets: save best {saved[0]:7.1f} ms (median {saved[1]:7.1f}), "
        f"open best {opened[0]:7.1f} ms (median {opened[1]:7.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    folder = Path(tempfile.mkdtemp())
    kms = GcpKmsServer().start()
    gcs = GcsServer().start()
    try:
        email = kms.auth.new_service_account(folder / "sa.json", kms.token_uri)
        key = kms.create_key(f"{PROJECT_KEYS}/cryptoKeys/bench").name
        kms.grant(PROJECT_KEYS, f"serviceAccount:{email}")
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(folder / "sa.json")
        os.environ["VEIL_GCPKMS_ENDPOINT"] = kms.url
        gcs.create_bucket("bench")
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.url

        wrapped = GcpKmsProvider(key).wrap_key(generate_data_key(), {"stack": "dev"})
        best, median = timed(lambda: GcpKmsProvider(key).unwrap_key(wrapped, {"stack": "dev"}), 20)
        print(f"gcpkms unwrap by a fresh provider: best {best:.1f} ms, median {median:.1f} ms")
        for n in sizes:
            bench_kms(n, kms, key, args.runs)
        for n in sizes:
            bench_store("file", f"file://{tempfile.mkdtemp()}/state", n, args.runs)
            bench_store("gs  ", f"gs://bench/n{n}", n, args.runs)
    finally:
        kms.stop()
        gcs.stop()


if __name__ == "__main__":
    main()
