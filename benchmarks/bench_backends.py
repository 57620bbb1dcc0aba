"""Save and open latency of a stack of 1,000 and 10,000 secrets on each state store,
next to the file store.

Run: python benchmarks/bench_backends.py [--secrets 1000,10000] [--rounds R]

Needs ``pip install -e '.[test,aws,gcp,postgres]'`` and PostgreSQL's ``initdb``/``pg_ctl``.
Every store's service runs locally on 127.0.0.1, started here: S3 is moto's server
behind the counting front of ``tests/servers/moto.py``, which also counts the requests
each operation costs; PostgreSQL is a server from this machine's binaries
(``tests/servers/postgres.py``), each save one transaction; GCS is the loopback JSON
API server of ``tests/servers/gcs.py`` (it enforces generation preconditions, which
``gcp-storage-emulator`` does not). The
key provider is a local key file (``file://``) everywhere, so only the store differs.

Per store and size: a stack is created with N secrets; each round changes one secret
and times ``Stack.save`` (seal, lock already held, conditional write, history), then
times ``Stack.open`` (lock, read, parse, unwrap) and closing it. Medians over the
rounds; for S3 and GCS also the requests per save and per open.

Each store is one function in ``CASES``: a store adds its own as one more function
that yields :class:`Row` values.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import veil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the local servers the tests use


@dataclass
class Row:
    store: str
    secrets: int
    save_s: float
    open_s: float
    requests_per_save: str = "-"
    requests_per_open: str = "-"
    size_kib: float = 0.0


@dataclass
class Bench:
    sizes: list[int]
    rounds: int
    workdir: Path

    def measure(
        self, name: str, backend: str, count: Callable[[], int] | None = None
    ) -> Iterator[Row]:
        """Time saves and opens of a stack on ``backend`` for every size; ``count``
        returns the requests the service has received so far."""
        for n in self.sizes:
            folder = Path(tempfile.mkdtemp(dir=self.workdir))
            key = f"file://{folder / 'bench.key'}"
            stack = veil.Stack.create(
                f"bench-{n}", backend=backend, secrets_provider=key, project_dir=folder
            )
            for i in range(n):
                stack.export(f"k{i}", veil.secret(f"value-{i}-{os.urandom(6).hex()}"))
            stack.save()
            saves, opens, save_calls, open_calls = [], [], [], []
            for r in range(self.rounds):
                stack.export("k0", veil.secret(f"changed-{r}"))
                before = count() if count else 0
                start = time.perf_counter()
                stack.save()
                saves.append(time.perf_counter() - start)
                save_calls.append((count() if count else 0) - before)
                stack.close()
                before = count() if count else 0
                start = time.perf_counter()
                stack = veil.Stack.open(f"bench-{n}", backend=backend, project_dir=folder)
                opens.append(time.perf_counter() - start)
                open_calls.append((count() if count else 0) - before)
            size = len(stack.backend.read(f"bench-{n}")) / 1024
            stack.close()
            yield Row(
                name,
                n,
                statistics.median(saves),
                statistics.median(opens),
                str(max(save_calls)) if count else "-",
                str(max(open_calls)) if count else "-",
                size,
            )


Case = Callable[[Bench], Iterator[Row]]


# --- cases ----------------------------------------------------------------------------------


def case_file(bench: Bench) -> Iterator[Row]:
    yield from bench.measure("file://", f"file://{bench.workdir / 'state'}")


def case_s3(bench: Bench) -> Iterator[Row]:
    import boto3

    from servers.moto import MotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = MotoServer()
    server.start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        bucket = "veil-bench"
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/{uuid.uuid4().hex[:8]}?endpoint={server.endpoint}"
        yield from bench.measure("s3:// (moto)", url, count=lambda: server.count("s3:"))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def case_postgres(bench: Bench) -> Iterator[Row]:
    from servers.postgres import postgres_bin_dir, running_postgres

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        print("postgres://: skipped, PostgreSQL's initdb and pg_ctl are missing")
        return
    with running_postgres(bin_dir, durable=True) as pg:  # fsync on, as in production
        database = pg.create_database("bench")
        yield from bench.measure("postgres://", pg.url(database, query="?table=bench"))


def case_gcs(bench: Bench) -> Iterator[Row]:
    from servers.gcs import GcsServer

    server = GcsServer().start()
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    try:
        server.create_bucket("veil-bench")
        url = f"gs://veil-bench/{uuid.uuid4().hex[:8]}"
        yield from bench.measure("gs:// (loopback)", url, count=lambda: sum(server.calls.values()))
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        server.stop()


CASES: list[Case] = [case_file, case_s3, case_postgres, case_gcs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.secrets.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="veil-bench-backends-"))
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    print(f"save (one secret changed) and open, median of {args.rounds} rounds")
    print(
        f"{'store':<16} {'secrets':>8} {'state':>9} {'save':>10} {'open':>10} "
        f"{'req/save':>9} {'req/open':>9}"
    )
    try:
        for case in CASES:
            bench = Bench(sizes, args.rounds, Path(tempfile.mkdtemp(dir=workdir)))
            for row in case(bench):
                print(
                    f"{row.store:<16} {row.secrets:>8,} {row.size_kib:>6.0f} KiB "
                    f"{row.save_s * 1000:>7.1f} ms {row.open_s * 1000:>7.1f} ms "
                    f"{row.requests_per_save:>9} {row.requests_per_open:>9}",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
