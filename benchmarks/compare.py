"""Run a benchmark against another version of veil and this one, side by side.

Run: python benchmarks/compare.py REF BENCHMARK [ARGS...]

REF is any git revision (a commit, a tag, ``HEAD~3``). Its ``src`` is exported to a
temporary folder and put first on ``PYTHONPATH``, then the benchmark runs once with
that version and once with the working tree, one after the other in this run, so both
figures come from the same machine state. The benchmark script itself is always the
working tree's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export_src(ref: str, dest: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"],
        check=True,
        capture_output=True,
    ).stdout
    tar_path = dest / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def run(bench: Path, args: list[str], pythonpath: Path | None) -> None:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, str(bench), *args], check=True, env=env)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    ref, bench_name, *args = sys.argv[1:]
    bench = Path(bench_name)
    if not bench.exists():
        bench = ROOT / "benchmarks" / bench_name
    with tempfile.TemporaryDirectory() as tmp:
        src = export_src(ref, Path(tmp))
        print(f"== {ref}", flush=True)
        run(bench, args, src)
        print("== working tree", flush=True)
        run(bench, args, None)


if __name__ == "__main__":
    main()
