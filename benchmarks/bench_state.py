"""State documents: dumps/loads against a baseline of JSON plus one AES-GCM call per secret.

Run: /work/venv/bin/python benchmarks/bench_state.py [--sizes 1000,10000,100000]

For N secret leaves the tree holds N resources, each with a secret password and a few
plain fields (strings, numbers). Baselines:

- dumps: ``json.dumps`` of the same tree with plain passwords, plus per secret
  ``os.urandom(12)`` and one ``AESGCM.encrypt`` with a reused AESGCM object;
- loads: ``json.loads`` of that JSON, plus per secret one ``AESGCM.decrypt``.

veil's numbers include the leak guard (on by default), the document MAC and one
provider call (a local key file). Times are the best of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil import Secret
from veil.providers import LocalKeyProvider
from veil.state import dump_document, load_document


def make_tree(n: int, *, secret: bool) -> dict[str, Any]:
    wrap: Callable[[str], Any] = Secret if secret else str
    return {
        "resources": [
            {
                "urn": f"urn:veil:dev::app::aws:rds/instance:Instance::db{i}",
                "type": "aws:rds/instance:Instance",
                "inputs": {
                    "engine": "postgres",
                    "port": 5432,
                    "storage": 20.5,
                    "password": wrap(f"pw-{i:08d}-{os.urandom(6).hex()}"),
                },
                "outputs": {"endpoint": f"db{i}.internal:5432", "id": f"db-{i}"},
            }
            for i in range(n)
        ]
    }


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(n: int, provider: LocalKeyProvider) -> dict[str, float]:
    repeat = 5 if n <= 10_000 else 3
    tree = make_tree(n, secret=True)
    plain = make_tree(n, secret=False)
    passwords = [r["inputs"]["password"] for r in plain["resources"]]
    aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def base_dumps() -> None:
        json.dumps(plain)
        for p in passwords:
            aead.encrypt(os.urandom(12), p.encode(), None)

    sealed = [(os.urandom(12), p) for p in passwords]
    sealed = [(nonce, aead.encrypt(nonce, p.encode(), None)) for nonce, p in sealed]
    text = json.dumps(plain)

    def base_loads() -> None:
        json.loads(text)
        for nonce, ct in sealed:
            aead.decrypt(nonce, ct, None)

    data, doc = dump_document(tree, provider=provider, stack="bench")
    results: dict[str, float] = {}
    results["base_dumps"] = best(base_dumps, repeat)
    results["dumps"] = best(lambda: dump_document(tree, provider=provider, stack="bench"), repeat)
    results["resave"] = best(
        lambda: dump_document(tree, provider=provider, stack="bench", previous=doc), repeat
    )
    results["base_loads"] = best(base_loads, repeat)
    results["loads"] = best(lambda: load_document(data, provider=provider).tree, repeat)

    again, _ = dump_document(tree, provider=provider, stack="bench", previous=doc)
    old_tokens = [r["inputs"]["password"] for r in json.loads(data)["tree"]["resources"]]
    new_tokens = [r["inputs"]["password"] for r in json.loads(again)["tree"]["resources"]]
    results["identical"] = float(old_tokens == new_tokens)
    results["size"] = len(data)
    return results


def bench_guard(n: int = 100_000) -> tuple[float, int]:
    """The leak guard alone: n secrets against the tree's plain strings, plus n more
    (no leak); best of 3. Returns the time and the number of plain strings."""
    try:
        from veil.state._walk import Sealer
        from veil.state.leaks import find_leaks
    except ImportError:  # a revision before the state rooms (for compare.py)
        from veil.state import document

        Sealer = document._Sealer  # type: ignore[attr-defined]
        find_leaks = document._find_leaks  # type: ignore[attr-defined]

    sealer = Sealer("bench")
    sealer.root(make_tree(n, secret=True))
    strings = sealer.strings + [f"plain-{i:08d}-{os.urandom(6).hex()}" for i in range(n)]
    secrets = [leaf[0] for leaf in sealer.leaves]
    return best(lambda: find_leaks(strings, secrets, []), 3), len(strings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    warnings.simplefilter("error")  # the benchmark tree holds no leak
    with tempfile.TemporaryDirectory() as folder:
        provider = LocalKeyProvider(Path(folder) / "bench.key")
        print(
            f"{'secrets':>8} {'dumps':>9} {'base':>9} {'ratio':>6} {'re-save':>9} "
            f"{'loads':>9} {'base':>9} {'ratio':>6} {'same ct':>7} {'bytes':>11}"
        )
        for n in sizes:
            r = run(n, provider)
            print(
                f"{n:>8} {r['dumps'] * 1e3:>7.1f}ms {r['base_dumps'] * 1e3:>7.1f}ms "
                f"{r['dumps'] / r['base_dumps']:>5.2f}x {r['resave'] * 1e3:>7.1f}ms "
                f"{r['loads'] * 1e3:>7.1f}ms {r['base_loads'] * 1e3:>7.1f}ms "
                f"{r['loads'] / r['base_loads']:>5.2f}x {'yes' if r['identical'] else 'NO':>7} "
                f"{int(r['size']):>11,}"
            )
        guard, count = bench_guard(max(sizes))
        print(
            f"leak guard alone, {max(sizes)} secrets and {count} plain strings: {guard * 1e3:.1f}ms"
        )


if __name__ == "__main__":
    main()
