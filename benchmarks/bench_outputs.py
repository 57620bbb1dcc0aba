"""veil's Output versus the pulumi SDK's, side by side in one process.

Run: python benchmarks/bench_outputs.py   (needs `pip install -e '.[bench]'`)

Prints microseconds per operation for both and the ratio pulumi / veil. Each case is
run REPEAT times and the best run is kept, for both libraries alike.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import veil
from veil import Output as VOutput

REPEAT = 5


def best(fn: Callable[[], Any], repeat: int = REPEAT) -> float:
    """Best wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def nested(leaves: int, width: int = 10) -> Any:
    """Nested dicts, ``width`` keys each (the shape of real state and config trees),
    holding ``leaves`` string leaves (a power of ``width``)."""

    def level(n: int, prefix: str) -> Any:
        if n == 1:
            return f"value-{prefix}"
        return {f"k{i}": level(n // width, f"{prefix}.{i}") for i in range(width)}

    return level(leaves, "v")


# --- veil: everything runs synchronously ------------------------------------------


def veil_apply_chain(n: int) -> None:
    o = VOutput.secret(0)
    for _ in range(n):
        o = o.apply(lambda v: v + 1)
    assert veil.reveal(o) == n
    assert veil.is_secret(o)


def veil_all(outs: list[VOutput[int]]) -> None:
    o = VOutput.all(*outs)
    assert len(veil.reveal(o)) == len(outs)


def veil_secrets(n: int) -> None:
    outs = [VOutput.secret(i) for i in range(n)]
    for o in outs:
        veil.reveal(o)


def veil_strings(n: int) -> None:
    pw = VOutput.secret("hunter2")
    for i in range(n):
        a = VOutput.format("postgres://admin:{0}@db-{1}:5432", pw, i)
        b = VOutput.concat("user=", "admin", ";pw=", pw)
        c = VOutput.json_dumps({"url": a, "dsn": b, "n": i})
        veil.reveal(c)


def veil_from_input(tree: dict[str, Any]) -> None:
    veil.reveal(VOutput.from_input(tree))


# --- pulumi: inside one event loop, as a Pulumi program runs ------------------------


def pulumi_cases(
    n_apply: int, n_all: int, n_secrets: int, n_strings: int, tree: dict[str, Any]
) -> dict[str, float]:
    import pulumi
    from pulumi import Output as POutput

    del pulumi
    results: dict[str, float] = {}

    async def apply_chain() -> None:
        o = POutput.secret(0)
        for _ in range(n_apply):
            o = o.apply(lambda v: v + 1)
        assert await o.future() == n_apply

    async def all_(outs: list[Any]) -> None:
        o = POutput.all(*outs)
        values = await o.future()
        assert values is not None
        assert len(values) == len(outs)

    async def secrets() -> None:
        outs = [POutput.secret(i) for i in range(n_secrets)]
        await asyncio.gather(*(o.future() for o in outs))

    async def strings() -> None:
        pw = POutput.secret("hunter2")
        for i in range(n_strings):
            a = POutput.format("postgres://admin:{0}@db-{1}:5432", pw, i)
            b = POutput.concat("user=", "admin", ";pw=", pw)
            c = POutput.json_dumps({"url": a, "dsn": b, "n": i})
            await c.future()

    async def from_input() -> None:
        await POutput.from_input(tree).future()

    async def timed(make: Callable[[], Any], repeat: int = 3) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await make()
            times.append(time.perf_counter() - t0)
        return min(times)

    async def main() -> None:
        results["a"] = await timed(apply_chain)
        outs = [POutput.from_input(i) for i in range(n_all)]
        results["b"] = await timed(lambda: all_(outs))
        results["c"] = await timed(secrets)
        results["d"] = await timed(strings)
        results["e10k"] = await timed(from_input, repeat=1)

    asyncio.run(main())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    n_apply, n_all, n_secrets, n_strings = 1000, 10_000 // scale, 10_000 // scale, 1000 // scale
    tree10k, tree100k = nested(10_000 // scale), nested(100_000 // scale)

    outs = [VOutput.from_input(i) for i in range(n_all)]
    v = {
        "a": best(lambda: veil_apply_chain(n_apply)) / n_apply,
        "b": best(lambda: veil_all(outs)) / n_all,
        "c": best(lambda: veil_secrets(n_secrets)) / n_secrets,
        "d": best(lambda: veil_strings(n_strings)) / n_strings,
        "e10k": best(lambda: veil_from_input(tree10k)) / (10_000 // scale),
        "e100k": best(lambda: veil_from_input(tree100k), repeat=3) / (100_000 // scale),
    }
    p = pulumi_cases(n_apply, n_all, n_secrets, n_strings, tree10k)
    p = {
        "a": p["a"] / n_apply,
        "b": p["b"] / n_all,
        "c": p["c"] / n_secrets,
        "d": p["d"] / n_strings,
        "e10k": p["e10k"] / (10_000 // scale),
    }
    targets = {"a": 15, "b": 50, "c": 50, "d": 50, "e10k": 50}
    names = {
        "a": "(a) apply, per step of a 1,000-deep chain on a secret",
        "b": "(b) Output.all, per item of 10,000 Outputs",
        "c": "(c) secret created and resolved, per secret",
        "d": "(d) format + concat + json_dumps with a secret, per round",
        "e10k": "(e) from_input, per leaf, 10,000 leaves",
    }
    from importlib.metadata import version

    print(f"python {sys.version.split()[0]}, veil {veil.__version__}, pulumi {version('pulumi')}")
    print(f"{'case':<60} {'veil us':>9} {'pulumi us':>10} {'ratio':>8} {'target':>7}")
    ok = True
    for key, name in names.items():
        ratio = p[key] / v[key]
        hit = ratio >= targets[key]
        ok &= hit
        print(
            f"{name:<60} {v[key] * 1e6:9.3f} {p[key] * 1e6:10.2f} {ratio:7.1f}x {targets[key]:>5}x"
            + ("" if hit else "  MISSED")
        )
    linear = v["e100k"] / v["e10k"]
    ok &= linear <= 1.5
    print(
        f"{'(e) from_input, per leaf, 100,000 leaves (veil only)':<60} {v['e100k'] * 1e6:9.3f}"
        f"   per-leaf cost 100k/10k = {linear:.2f} (target <= 1.5)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
