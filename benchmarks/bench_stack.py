"""Opening and saving a stack: what a program pays per run, with the trust checks.

Run: python benchmarks/bench_stack.py [--sizes 1000,10000] [--repeat 5]

A stack holds N exported resources, each with a secret password and plain fields, and
a config of 20 values (5 secure). Measured, best of ``--repeat`` runs:

- open: ``Stack.open`` (read, recipients checked against the config, one unwrap, MAC,
  serial checked against this folder's record, config values checked against the
  state's digests) and reading the outputs;
- save unchanged: ``save()`` of the opened stack, nothing changed (ciphertexts reused,
  no provider call);
- save one change: one secret changed, then ``save()``.

The provider is a local key file, so the figures are veil's own cost. Compare two
versions of veil side by side with ``python benchmarks/compare.py REF bench_stack.py``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import veil
from veil import Secret, Stack
from veil.providers import LocalKeyProvider


def _open_kwargs(provider: Any) -> dict[str, Any]:
    # Older versions named the argument provider=.
    name = (
        "secrets_provider"
        if "secrets_provider" in inspect.signature(Stack.open).parameters
        else "provider"
    )
    return {name: provider}


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(n: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["VEIL_HOME"] = str(root / "home")
        project = root / "project"
        project.mkdir()
        backend = f"file://{root / 'state'}"
        key = root / "dev.key"
        with Stack.create(
            "dev", backend=backend, secrets_provider=LocalKeyProvider(key), project_dir=project
        ) as stack:
            for i in range(20):
                stack.config.set(f"app:k{i}", f"value-{i:04d}-{os.urandom(4).hex()}", secret=i < 5)
            for i in range(n):
                stack.export(
                    f"db{i}",
                    {
                        "endpoint": f"db{i}.internal:5432",
                        "port": 5432,
                        "password": Secret(f"pw-{i:08d}-{os.urandom(6).hex()}"),
                    },
                )
            stack.save()

        def open_stack() -> None:
            with Stack.open(
                "dev", backend=backend, project_dir=project, **_open_kwargs(LocalKeyProvider(key))
            ) as s:
                _ = s.outputs

        results = {"open": best(open_stack, repeat)}
        with Stack.open(
            "dev", backend=backend, project_dir=project, **_open_kwargs(LocalKeyProvider(key))
        ) as s:
            results["save unchanged"] = best(s.save, repeat)
            counter = iter(range(10**9))

            def save_one() -> None:
                s.export("db0", {"password": Secret(f"changed-{next(counter)}")})
                s.save()

            results["save one change"] = best(save_one, repeat)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"veil from {Path(veil.__file__).parent}")
    print(f"{'secrets':>8} {'open ms':>9} {'save unchanged ms':>18} {'save one change ms':>19}")
    for n in (int(s) for s in args.sizes.split(",")):
        r = run(n, args.repeat)
        print(
            f"{n:>8} {r['open'] * 1e3:>9.1f} {r['save unchanged'] * 1e3:>18.1f} "
            f"{r['save one change'] * 1e3:>19.1f}"
        )


if __name__ == "__main__":
    main()
